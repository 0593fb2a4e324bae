# Sourced by the scripts: makes ./.venv with the project installed (editable) and activates it, with the
# optional dependencies named by $TLOG_EXTRAS (pyproject's extras, comma-separated; default "test"; empty:
# none, as scripts/serve wants). Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
extras="${TLOG_EXTRAS-test}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.installed-${extras:-none}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root${extras:+[$extras]}"
  touch "$stamp"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
