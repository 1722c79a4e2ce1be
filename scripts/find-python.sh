#!/bin/sh
# Print the path of a working Python X.Y interpreter: the newest pyenv build of it
# ($PYENV_ROOT/versions/X.Y.*, PYENV_ROOT defaulting to ~/.pyenv), else pythonX.Y on PATH.
# Exit status 1, with a message naming the version on stderr, when there is none.
# Usage: scripts/find-python.sh 3.13
set -eu

if [ $# -ne 1 ] || ! printf '%s\n' "$1" | grep -Eq '^3\.[0-9]+$'; then
    echo "find-python: usage: $0 X.Y (e.g. 3.13), got: $*" >&2
    exit 2
fi
version="$1"
root="${PYENV_ROOT:-$HOME/.pyenv}"

works() {
    # a pyenv shim or a broken link also "exists": ask the interpreter itself
    [ -x "$1" ] && [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$version" ]
}

for candidate in $(ls -d "$root/versions/$version".* 2>/dev/null | sort -V -r); do
    if works "$candidate/bin/python$version"; then
        echo "$candidate/bin/python$version"
        exit 0
    fi
done

if on_path="$(command -v "python$version" 2>/dev/null)" && works "$on_path"; then
    echo "$on_path"
    exit 0
fi

echo "find-python: Python $version not found: no working $root/versions/$version.*/bin/python$version" \
    "and no python$version on PATH (install it, e.g. pyenv install $version)" >&2
exit 1
