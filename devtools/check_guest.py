#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
make check-guest: make run in each of its modes, one after the other,
with PASS or FAIL and the key numbers of each, then a summary.  Each
run boots the TCG guest (about 30 s) and runs fio with verification;
the whole takes about 15 minutes.  The output of each run is in
build/guest/logs/check-guest-MODE.txt.

  devtools/check_guest.py [--no-build] [MODE...]   (default: all modes)
  SKIP_BUILD=1      as --no-build
"""

import os
from pathlib import Path
import re
import subprocess
import sys
import time
from typing import Dict, List, Tuple

TOP = Path(__file__).resolve().parent.parent
LOGS = TOP / 'build' / 'guest' / 'logs'

# name, the make run settings
MODES: List[Tuple[str, Dict[str, str]]] = [
    ('default', {}),
    ('virtio-scsi', {'CONTROLLER': 'virtio-scsi', 'COMPARE': '1'}),
    ('ahci', {'CONTROLLER': 'ahci', 'COMPARE': '1'}),
    ('nvme', {'CONTROLLER': 'nvme', 'COMPARE': '1'}),
    ('migrate', {'MIGRATE': '1'}),
    ('enospc', {'ENOSPC': '1'}),
    ('eio', {'EIO': '1'}),
    ('memlock', {'MEMLOCK_USER': '1'}),
    ('nobody', {'NOBODY': '1'}),
    ('vhost-user', {'VHOST_USER': '1'}),
]
# Settings that select a mode: not inherited from the caller
MODE_VARS = ('CONTROLLER', 'COMPARE', 'MIGRATE', 'ENOSPC', 'EIO',
             'MEMLOCK_USER', 'NOBODY', 'VHOST_USER', 'BACKEND', 'DISK')
# Lines of make run's output worth showing under the verdict
KEY_LINES = re.compile(r'^((write|read)-qd(1|32) |migration |postcopy |'
                       r'io-error |skipped |  - |note )')


def run_mode(name: str, settings: Dict[str, str]) -> Tuple[bool, float]:
    """make run in one mode; whether it passed, and its seconds"""
    env = {k: v for k, v in os.environ.items() if k not in MODE_VARS}
    env.update(settings, SKIP_BUILD='1')
    log = LOGS / f'check-guest-{name}.txt'
    label = ' '.join(f'{k}={v}' for k, v in settings.items()) or 'defaults'
    print(f'== {name}: make run {label}', flush=True)
    t0 = time.monotonic()
    with open(log, 'w', encoding='utf-8') as f:
        rc = subprocess.run(['make', '-s', '-C', str(TOP), 'run'], env=env,
                            stdout=f, stderr=subprocess.STDOUT,
                            check=False).returncode
    secs = time.monotonic() - t0
    output = log.read_text(errors='replace').splitlines()
    in_compare = False
    for line in output:
        in_compare = in_compare or line.startswith('== latency')
        if in_compare or KEY_LINES.match(line):
            print(f'   {line}')
    verdict = 'PASS' if rc == 0 else 'FAIL'
    print(f'{verdict} {name} ({secs:.0f} s, log {log})\n', flush=True)
    return rc == 0, secs


def main(argv: List[str]) -> int:
    """make check-guest"""
    build = '--no-build' not in argv and not os.environ.get('SKIP_BUILD')
    argv = [a for a in argv if a != '--no-build']
    modes = [m for m in MODES if not argv or m[0] in argv]
    unknown = set(argv) - {m[0] for m in MODES}
    if unknown:
        print(f'check_guest.py: unknown modes {" ".join(sorted(unknown))}; '
              f'modes: {" ".join(m[0] for m in MODES)}', file=sys.stderr)
        return 2
    t0 = time.monotonic()
    if build:
        subprocess.run([str(TOP / 'devtools' / 'build.sh')], check=True,
                       env=dict(os.environ,
                                BUILD_TARGETS='qemu-system-x86_64 '
                                'storage-daemon/qemu-storage-daemon'))
    LOGS.mkdir(parents=True, exist_ok=True)
    results = [(name, *run_mode(name, settings)) for name, settings in modes]
    wall = time.monotonic() - t0
    print('== check-guest summary')
    for name, passed, secs in results:
        print(f"  {'PASS' if passed else 'FAIL'}  {name:8} {secs:5.0f} s")
    failed = sum(1 for _, passed, _ in results if not passed)
    print(f'{len(results) - failed} passed, {failed} failed; wall time '
          f'{wall / 60:.1f} min')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
