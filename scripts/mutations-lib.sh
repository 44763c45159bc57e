# mutations-lib.sh — the mutation scripts' machinery (sourced by scripts/*-mutations.sh, from the
# repository root): `target FILE TESTS` names the file the next mutations break and the command
# that must then fail; `mutate NAME OLD NEW` replaces OLD (which must occur exactly once) with NEW,
# runs TESTS, says `killed` (with the first failure it finds) or `SURVIVED`, and restores the
# file; every target is restored on exit, however the script ends; `mutations_done` prints the
# count of survivors and fails if there is any.
backups=$(mktemp -d)
restore() { for p in "$backups"/*.path; do [ -e "$p" ] && cp "${p%.path}" "$(cat "$p")"; done; }
trap 'restore; rm -rf "$backups"' EXIT
survivors=0
target() {
  src=$1 tests=$2 backup="$backups/$(echo "$1" | tr / _)"
  [ -e "$backup" ] || cp "$src" "$backup"
  echo "$src" >"$backup.path"
}
mutate() {  # name, old text, new text (old must occur exactly once in $src)
  local name=$1 old=$2 new=$3 why
  cp "$backup" "$src"
  python3 - "$src" "$old" "$new" <<'PY' || { echo "mutation '$name': pattern not found"; exit 2; }
import sys
path, old, new = sys.argv[1:]
s = open(path).read()
if s.count(old) != 1:
    sys.exit(1)
open(path, "w").write(s.replace(old, new))
PY
  if (eval "$tests") >/tmp/mutation.log 2>&1; then
    echo "SURVIVED  $name"
    survivors=$((survivors + 1))
  else
    why=$(grep -m1 -oE 'FAIL [^:]*: [^;]{0,160}|panicked at [^ ]*|deadlock[^;]{0,80}' /tmp/mutation.log)
    echo "killed    $name: ${why:-$(grep -m1 -oE 'error[^;]{0,120}' /tmp/mutation.log)}"
  fi
  cp "$backup" "$src"
}
mutations_done() {
  echo "$survivors mutation(s) survived"
  [ "$survivors" -eq 0 ]
}
