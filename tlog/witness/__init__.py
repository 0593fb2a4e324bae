"""A c2sp.org/tlog-witness witness: it cosigns a log's checkpoints (c2sp.org/tlog-cosignature,
`cosignature/v1`) only when they extend, append-only, the last one it cosigned for that log.

- `core`: the add-checkpoint request format and the checks, in the spec's order (pure);
- `store`: the witness's key file and SQLite state, advanced by compare-and-swap;
- `server`: the aiohttp app behind `tlog witness serve`;
- `cli`: the `tlog witness` commands.
"""
