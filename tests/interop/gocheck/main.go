// Command gocheck runs tlog's formats through the reference Go implementations, golang.org/x/mod/sumdb/note
// and golang.org/x/mod/sumdb/tlog, so the Python tests can check that what tlog emits is accepted by them
// and that what they emit is accepted by tlog.
//
//	gocheck verify-note VKEY...      < note   note.Open; prints the text and signatures as JSON
//	gocheck sign-note SKEY...        < text   note.Sign; prints the signed note
//	gocheck parse-checkpoint         < body   tlog.ParseTree on the size and hash lines; prints JSON
//	gocheck check-tree               < json   TreeHash, CheckRecord, CheckTree (and ProveRecord/ProveTree
//	                                          for comparison) over tlog's roots and proofs
//	gocheck check-tiles DIR SIZE ROOT         reads a c2sp.org/tlog-tiles directory (tile/<L>/..., tile/
//	                                          entries/...) and checks entries, tiles and root for SIZE
//	gocheck prove-tree DIR OLD NEW ROOT       tlog.ProveTree from OLD to NEW over the tiles of DIR, read
//	                                          through sumdb's authenticated TileHashReader (ROOT: NEW's root)
//
// Errors go to stderr with exit status 1; results are JSON on stdout.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: gocheck verify-note|sign-note|parse-checkpoint|check-tree|check-tiles|prove-tree ..."))
	}
	var out any
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "verify-note":
		out, err = verifyNote(args, stdin())
	case "sign-note":
		var msg []byte
		if msg, err = signNote(args, stdin()); err == nil {
			os.Stdout.Write(msg)
			return
		}
	case "parse-checkpoint":
		out, err = parseCheckpoint(stdin())
	case "check-tree":
		out, err = checkTree(stdin())
	case "check-tiles":
		out, err = checkTiles(args)
	case "prove-tree":
		out, err = proveTree(args)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gocheck:", err)
	os.Exit(1)
}

func stdin() []byte {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	return data
}

// --- notes ---------------------------------------------------------------------------------------------

// cosignatureVerifier checks c2sp.org/tlog-cosignature (type 0x04) signatures, which this version of
// sumdb/note does not know: 8-byte big-endian timestamp, then Ed25519 over
// "cosignature/v1\ntime <t>\n" followed by the note text.
type cosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosignatureVerifier) Name() string    { return v.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.hash }
func (v *cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	if t > 1<<63-1 {
		return false
	}
	m := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	return ed25519.Verify(v.key, m, sig[8:])
}

func newVerifier(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(vkey)
	if err == nil {
		return v, nil
	}
	if cv, ok := newCosignatureVerifier(vkey); ok {
		return cv, nil
	}
	return nil, fmt.Errorf("verifier key %q: %w", vkey, err)
}

func newCosignatureVerifier(vkey string) (*cosignatureVerifier, bool) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, false
	}
	hash, err1 := strconv.ParseUint(parts[1], 16, 32)
	key, err2 := base64.StdEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(key) != 33 || key[0] != 0x04 {
		return nil, false
	}
	sum := sha256.Sum256(append([]byte(parts[0]+"\n"), key...))
	if binary.BigEndian.Uint32(sum[:]) != uint32(hash) {
		return nil, false
	}
	return &cosignatureVerifier{parts[0], uint32(hash), ed25519.PublicKey(key[1:])}, true
}

type sigJSON struct {
	Name string `json:"name"`
	Hash uint32 `json:"hash"`
	Sig  string `json:"sig"`
}

func sigsJSON(sigs []note.Signature) []sigJSON {
	out := []sigJSON{}
	for _, s := range sigs {
		out = append(out, sigJSON{s.Name, s.Hash, s.Base64})
	}
	return out
}

func verifyNote(vkeys []string, msg []byte) (any, error) {
	var list []note.Verifier
	for _, k := range vkeys {
		v, err := newVerifier(k)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	n, err := note.Open(msg, note.VerifierList(list...))
	if err != nil {
		return nil, err
	}
	return map[string]any{"text": n.Text, "verified": sigsJSON(n.Sigs), "unverified": sigsJSON(n.UnverifiedSigs)}, nil
}

func signNote(skeys []string, text []byte) ([]byte, error) {
	var signers []note.Signer
	for _, k := range skeys {
		s, err := note.NewSigner(k)
		if err != nil {
			return nil, fmt.Errorf("signer key: %w", err)
		}
		signers = append(signers, s)
	}
	return note.Sign(&note.Note{Text: string(text)}, signers...)
}

// parseCheckpoint reads a c2sp.org/tlog-checkpoint body with tlog.ParseTree. ParseTree only knows the
// "go.sum database tree" origin line of sum.golang.org, so the origin is swapped for it: what is being
// checked is that Go reads the size and root hash lines (and tolerates extension lines) as tlog wrote them.
func parseCheckpoint(body []byte) (any, error) {
	origin, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return nil, errors.New("checkpoint has no origin line")
	}
	tree, err := tlog.ParseTree(append([]byte("go.sum database tree\n"), rest...))
	if err != nil {
		return nil, err
	}
	return map[string]any{"origin": string(origin), "size": tree.N, "root": tree.Hash.String()}, nil
}

// --- trees and proofs --------------------------------------------------------------------------------

// memoryLog is every stored hash of a log, in sumdb/tlog's storage order.
type memoryLog struct{ hashes []tlog.Hash }

func (m *memoryLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("hash index %d not stored", x)
		}
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memoryLog) append(recordHash tlog.Hash, n int64) error {
	hashes, err := tlog.StoredHashesForRecordHash(n, recordHash, m)
	if err != nil {
		return err
	}
	m.hashes = append(m.hashes, hashes...)
	return nil
}

func buildLog(recordHashes []tlog.Hash) (*memoryLog, error) {
	m := &memoryLog{}
	for i, h := range recordHashes {
		if err := m.append(h, int64(i)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// rootOf is tlog's root of a tree of n records: sumdb/tlog calls the empty tree's hash all zeros, RFC 9162
// calls it SHA-256 of the empty string.
func rootOf(n int64, r tlog.HashReader) (tlog.Hash, error) {
	if n == 0 {
		return tlog.Hash(sha256.Sum256(nil)), nil
	}
	return tlog.TreeHash(n, r)
}

type treeInput struct {
	LeafHashes []tlog.Hash         `json:"leaf_hashes"`
	Roots      map[int64]tlog.Hash `json:"roots"`
	Inclusion  []struct {
		Index int64       `json:"index"`
		Size  int64       `json:"size"`
		Proof []tlog.Hash `json:"proof"`
	} `json:"inclusion"`
	Consistency []struct {
		Old   int64       `json:"old"`
		New   int64       `json:"new"`
		Proof []tlog.Hash `json:"proof"`
	} `json:"consistency"`
}

func sameHashes(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func checkTree(data []byte) (any, error) {
	var in treeInput
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, err
	}
	m, err := buildLog(in.LeafHashes)
	if err != nil {
		return nil, err
	}
	root := func(n int64) (tlog.Hash, error) {
		if n < 0 || n > int64(len(in.LeafHashes)) {
			return tlog.Hash{}, fmt.Errorf("size %d outside the %d leaves given", n, len(in.LeafHashes))
		}
		return rootOf(n, m)
	}
	for n, want := range in.Roots {
		got, err := root(n)
		if err != nil {
			return nil, err
		}
		if got != want {
			return nil, fmt.Errorf("root of size %d: tlog says %v, sumdb/tlog says %v", n, want, got)
		}
	}
	for _, c := range in.Inclusion {
		th, err := root(c.Size)
		if err != nil {
			return nil, err
		}
		if c.Index < 0 || c.Index >= c.Size {
			return nil, fmt.Errorf("inclusion of %d in %d: index outside the tree", c.Index, c.Size)
		}
		if err := tlog.CheckRecord(c.Proof, c.Size, th, c.Index, in.LeafHashes[c.Index]); err != nil {
			return nil, fmt.Errorf("inclusion of %d in %d: CheckRecord: %w", c.Index, c.Size, err)
		}
		goProof, err := tlog.ProveRecord(c.Size, c.Index, m)
		if err != nil || !sameHashes(goProof, c.Proof) {
			return nil, fmt.Errorf("inclusion of %d in %d: ProveRecord gives another proof (%v)", c.Index, c.Size, err)
		}
	}
	for _, c := range in.Consistency {
		oldRoot, err := root(c.Old)
		if err != nil {
			return nil, err
		}
		newRoot, err := root(c.New)
		if err != nil {
			return nil, err
		}
		if err := tlog.CheckTree(c.Proof, c.New, newRoot, c.Old, oldRoot); err != nil {
			return nil, fmt.Errorf("consistency %d to %d: CheckTree: %w", c.Old, c.New, err)
		}
		goProof, err := tlog.ProveTree(c.New, c.Old, m)
		if err != nil || !sameHashes(goProof, c.Proof) {
			return nil, fmt.Errorf("consistency %d to %d: ProveTree gives another proof (%v)", c.Old, c.New, err)
		}
	}
	return map[string]int{"roots": len(in.Roots), "inclusion": len(in.Inclusion), "consistency": len(in.Consistency)}, nil
}

// --- tiles ---------------------------------------------------------------------------------------------

// tileDir reads c2sp.org/tlog-tiles files from a directory. Those paths are sumdb/tlog's tile paths
// without the height element ("tile/0/x001/234.p/5" for sumdb's "tile/8/0/x001/234.p/5"), and with
// "entries" for sumdb's "data" level.
type tileDir string

func (d tileDir) path(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", t.H))
	if t.L == -1 {
		p = "entries/" + strings.TrimPrefix(p, "data/")
	}
	return filepath.Join(string(d), "tile", filepath.FromSlash(p))
}

func (d tileDir) read(t tlog.Tile) ([]byte, error) {
	return os.ReadFile(d.path(t))
}

func (d tileDir) Height() int { return tileHeight }

func (d tileDir) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := d.read(t)
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (d tileDir) SaveTiles([]tlog.Tile, [][]byte) {}

// tilesForSize lists the hash tiles a tree of n records is served from: full tiles and, at each level,
// the one partial tile of exactly the width n implies (which tlog-tiles keeps servable for every
// checkpointed size). The entry bundles are the level-0 tiles at sumdb's level -1.
func tilesForSize(n int64) []tlog.Tile {
	var tiles []tlog.Tile
	for level := 0; n>>(tileHeight*level) > 0; level++ {
		count := n >> (tileHeight * level)
		for i := int64(0); i < count>>tileHeight; i++ {
			tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: i, W: 1 << tileHeight})
		}
		if w := count % (1 << tileHeight); w > 0 {
			tiles = append(tiles, tlog.Tile{H: tileHeight, L: level, N: count >> tileHeight, W: int(w)})
		}
	}
	return tiles
}

func readEntries(d tileDir, n int64) ([][]byte, error) {
	var entries [][]byte
	for _, t := range tilesForSize(n) {
		if t.L != 0 {
			continue
		}
		t.L = -1
		data, err := d.read(t)
		if err != nil {
			return nil, err
		}
		var bundle [][]byte
		for len(data) > 0 {
			if len(data) < 2 || len(data) < 2+int(binary.BigEndian.Uint16(data)) {
				return nil, fmt.Errorf("%s: truncated entry", d.path(t))
			}
			size := int(binary.BigEndian.Uint16(data))
			bundle, data = append(bundle, data[2:2+size]), data[2+size:]
		}
		if len(bundle) != t.W {
			return nil, fmt.Errorf("%s: %d entries, want %d", d.path(t), len(bundle), t.W)
		}
		entries = append(entries, bundle...)
	}
	return entries, nil
}

// sampleIndexes is every index below n > 0 when n is small, else about 1024 of them spread evenly, and
// the last.
func sampleIndexes(n int64) []int64 {
	var out []int64
	for i := int64(0); i < n; i += n/1024 + 1 {
		out = append(out, i)
	}
	if out[len(out)-1] != n-1 {
		out = append(out, n-1)
	}
	return out
}

func checkTiles(args []string) (any, error) {
	if len(args) != 3 {
		return nil, errors.New("usage: gocheck check-tiles DIR SIZE ROOT")
	}
	d := tileDir(args[0])
	n, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("bad size %q", args[1])
	}
	want, err := tlog.ParseHash(args[2])
	if err != nil {
		return nil, fmt.Errorf("bad root %q: %w", args[2], err)
	}

	// 1. The entries, hashed as records, give the root.
	entries, err := readEntries(d, n)
	if err != nil {
		return nil, err
	}
	var recordHashes []tlog.Hash
	for _, e := range entries {
		recordHashes = append(recordHashes, tlog.RecordHash(e))
	}
	m, err := buildLog(recordHashes)
	if err != nil {
		return nil, err
	}
	if got, _ := rootOf(n, m); got != want {
		return nil, fmt.Errorf("entries give root %v, want %v", got, want)
	}

	// 2. Every hash tile of the tree holds exactly the hashes sumdb/tlog computes.
	tiles := 0
	for _, t := range tilesForSize(n) {
		wantData, err := tlog.ReadTileData(t, m)
		if err != nil {
			return nil, err
		}
		data, err := d.read(t)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(data, wantData) {
			return nil, fmt.Errorf("%s does not hold the hashes of the tree", d.path(t))
		}
		tiles++
	}

	// 3. sumdb/tlog's own authenticated tile reader agrees, and proves entries from the tiles alone (every
	// entry of a small log; about a thousand spread over a large one, as each proof re-reads its tiles).
	if n > 0 {
		r := tlog.TileHashReader(tlog.Tree{N: n, Hash: want}, d)
		if got, err := tlog.TreeHash(n, r); err != nil || got != want {
			return nil, fmt.Errorf("TileHashReader: root %v (%v), want %v", got, err, want)
		}
		for _, i := range sampleIndexes(n) {
			p, err := tlog.ProveRecord(n, i, r)
			if err != nil {
				return nil, fmt.Errorf("ProveRecord(%d) from tiles: %w", i, err)
			}
			if err := tlog.CheckRecord(p, n, want, i, recordHashes[i]); err != nil {
				return nil, fmt.Errorf("CheckRecord(%d) from tiles: %w", i, err)
			}
		}
	}
	return map[string]any{"size": n, "root": want.String(), "entries": len(entries), "tiles": tiles}, nil
}

// proveTree is a log's side of c2sp.org/tlog-witness done by sumdb/tlog alone: the consistency proof a log
// sends a witness, from the tiles of DIR (authenticated against ROOT as they are read).
func proveTree(args []string) (any, error) {
	if len(args) != 4 {
		return nil, errors.New("usage: gocheck prove-tree DIR OLD NEW ROOT")
	}
	old, err1 := strconv.ParseInt(args[1], 10, 64)
	n, err2 := strconv.ParseInt(args[2], 10, 64)
	if err1 != nil || err2 != nil || old < 0 || old > n {
		return nil, fmt.Errorf("bad sizes %q %q", args[1], args[2])
	}
	root, err := tlog.ParseHash(args[3])
	if err != nil {
		return nil, fmt.Errorf("bad root %q: %w", args[3], err)
	}
	proof := tlog.TreeProof{}
	if 0 < old && old < n {
		if proof, err = tlog.ProveTree(n, old, tlog.TileHashReader(tlog.Tree{N: n, Hash: root}, tileDir(args[0]))); err != nil {
			return nil, err
		}
	}
	return map[string]any{"proof": proof}, nil
}
