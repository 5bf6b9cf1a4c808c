# Sourced by scripts/run and scripts/test: make .venv and install ihub into it with every dependency pinned
# by a lock file (scripts/lock writes them), but only when something that decides the install changed.
# pip takes ~20 s even when everything is already there; a restart should take the time of `ihub serve`.

# install_locked LOCK TARGET STAMP
#   LOCK    constraints file pinning every dependency (requirements.lock, requirements-test.lock)
#   TARGET  what to install editable: "." or ".[test]"
#   STAMP   file in .venv holding the hash of the last successful install of TARGET
install_locked() {
  local lock=$1 target=$2 stamp=$3 want
  if [ ! -x .venv/bin/python ]; then "${PYTHON:-python3}" -m venv .venv; fi
  # What the install depends on: the declared dependencies, their pins, the target and the interpreter.
  want=$({ cat pyproject.toml "$lock"; echo "$target"; .venv/bin/python -VV; } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  echo "installing ihub${target#.} with the versions pinned in $lock into .venv ..." >&2
  # -c, not -r: the lock constrains versions without asking for packages another platform would not need,
  # and the project itself stays an editable install of this checkout.
  .venv/bin/python -m pip install -q --disable-pip-version-check -c "$lock" -e "$target"
  # Written only after pip succeeded (set -e stops before it otherwise), so a failed install is retried.
  echo "$want" >"$stamp"
}
