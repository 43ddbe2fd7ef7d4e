#!/usr/bin/env bash
# Gradescope's image set-up (run once when the autograder zip is uploaded): installs the CPU build of
# PyTorch and the requirements, makes the demo dataset the checks use, and trains nothing yet (the
# reference network is trained and cached at the first grading). Zip the repository with this file and
# run_autograder at its root: cp tools/gradescope/{setup.sh,run_autograder} . && zip -r autograder.zip .
set -euo pipefail
SOURCE="${AUTOGRADER_SOURCE:-/autograder/source}"
apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv util-linux
python3 -m pip install --break-system-packages torch==2.14.1 torchvision==0.29.1 \
    --index-url https://download.pytorch.org/whl/cpu
python3 -m pip install --break-system-packages -r "$SOURCE/requirements.txt"
python3 "$SOURCE/tools/demo_data.py"
