#!/usr/bin/env python3
"""
Where qemu-storage-daemon's CPU goes during one vhost-user-bench point:
the profiles behind bench/README.md, "Where the time goes".

    build/obj/pyvenv/bin/python3 devtools/profile_vhost_user.py \\
        build/obj IMAGE CONFIG [--write] [--depth N] [--secs S] [--poll]

CONFIG is one of make bench's configurations (bench_vhost_user.CONFIGS).
The client runs 1 queue at --depth against a daemon of its own while
`perf record -a -g -e cpu-clock` samples the machine; each of the
daemon's samples is put in one bucket by its thread (the IOThread, an
io-wq worker, the SQ thread, ...) and by what its call chain was doing.
The buckets are rough (first match in RULES), but they tell the same
work apart in every configuration, which is what a comparison needs.
perf comes from Debian's linux-perf package.
"""

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Counter, Dict, List, Tuple

import bench_vhost_user as bv
import run_guest

# What a kernel call chain was doing: the first rule one of whose
# substrings is in a frame of the chain wins, so the order matters
RULES: List[Tuple[str, Tuple[str, ...]]] = [
    ('block layer and device', ('blk_mq_', 'submit_bio', 'iomap_dio',
                                'virtqueue_notify')),
    ('wake an io-wq worker', ('io_wq_enqueue',)),
    ('I/O submission', ('io_submit_sqes', 'io_issue_sqe',
                        '__x64_sys_io_submit')),
    ('signal the front-end', ('eventfd_write',)),
    ('read the kick', ('eventfd_read',)),
    ('wait and switch', ('io_cqring_wait', 'schedule', 'do_epoll_wait',
                         'do_sys_poll', 'exit_to_user_mode_loop')),
    ('completions', ('task_work_run', 'io_getevents', 'io_cqring')),
]


def bucket(chain: List[Tuple[str, str]]) -> str:
    """@chain: (symbol, dso) from the sampled frame outwards"""
    if chain and not chain[0][1].startswith('[kernel'):
        return 'user space'
    for name, keys in RULES:
        if any(k in sym for sym, _ in chain for k in keys):
            return name
    return 'other kernel'


def samples(data: Path, pid: int) -> Counter[Tuple[int, str, str]]:
    """ns of cpu-clock per (tid, comm, bucket) of process @pid"""
    out = subprocess.run(['perf', 'script', '-i', str(data), '-F',
                          'pid,tid,comm,period,ip,sym,dso'],
                         capture_output=True, text=True, check=True).stdout
    ns: Counter[Tuple[int, str, str]] = collections.Counter()
    head: List[str] = []
    chain: List[Tuple[str, str]] = []
    for line in out.splitlines() + ['']:
        if line.startswith('\t'):
            f = line.split()
            if len(f) >= 3:
                chain.append((f[1], f[-1].strip('()')))
        elif line.strip():
            head, chain = line.split(), []
        elif head:
            # comm pid/tid period
            comm = ' '.join(head[:-2])
            p, t = head[-2].split('/')
            if int(p) == pid:
                ns[(int(t), comm, bucket(chain))] += int(head[-1])
            head = []
    return ns


def record(out: Path, delay: float, secs: float) -> threading.Thread:
    """perf record of the whole machine for @secs, after @delay"""
    def run() -> None:
        time.sleep(delay)
        subprocess.run(['perf', 'record', '-q', '-e', 'cpu-clock', '-g',
                        '-a', '-o', str(out), '--', 'sleep', str(secs)],
                       check=True, capture_output=True)
    t = threading.Thread(target=run)
    t.start()
    return t


def profile(obj: str, args: argparse.Namespace, tmp: Path) -> None:
    s = bv.Settings(quick=False)
    s.secs, s.warmup = args.secs, 0.5
    d = bv.Daemon('profile-' + args.config, bv.CONFIGS[args.config],
                  args.image, tmp, bv.IOTHREAD_OPTS.get(args.config, ''))
    d.start()
    try:
        window = args.secs - 0.4
        rec = record(tmp / 'perf.data', s.warmup + 0.2, window)
        client = str(Path(obj) / 'vhost-user-bench')
        if args.poll:
            row = run_polling(client, d, s, args)
        else:
            row = bv.run_point(client, d, s, args.rw, 1, args.depth)
        rec.join()
        ns = samples(tmp / 'perf.data', d.pid)
    finally:
        d.stop()
    # The shares come from perf, the total from the threads' schedstat:
    # in a VM, cpu-clock samples miss part of the time
    cpu = row['cpu_us_per_io']
    ios = row['iops'] * window
    print(f"{args.config}, {args.rw} QD{args.depth} on {args.image}: "
          f"{row['iops'] / 1000:.1f} kIOPS, mean {row['lat_mean_us']:.1f} "
          f"us, daemon CPU {cpu:.1f} us/IO (perf sampled "
          f"{sum(ns.values()) / 1000 / ios:.1f})")
    by_kind: Dict[Tuple[str, str], int] = collections.Counter()
    for (tid, comm, b), v in ns.items():
        by_kind[(d.kind(tid, comm), b)] += v
    total = sum(by_kind.values()) or 1
    for (kind, b), v in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        if v / total >= 0.01:
            print(f'  {kind:9} {b:24} {100 * v / total:5.1f}%  '
                  f'{cpu * v / total:6.1f} us/IO')


def run_polling(client: str, d: bv.Daemon, s: bv.Settings,
                args: argparse.Namespace) -> Dict[str, float]:
    """run_point with the client polling its used ring"""
    cmd = [client, '--socket', str(d.sock), '--depth', str(args.depth),
           '--time', str(s.secs), '--warmup', str(s.warmup), '--cpu-pid',
           str(d.pid), '--poll'] + (['--write'] if args.rw == 'write' else [])
    res = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                    check=True).stdout.splitlines()[-1])
    cpu = sum(t['cpu_s'] for t in res['daemon_threads'])
    return {'iops': res['iops'], 'lat_mean_us': res['lat_mean_us'],
            'cpu_us_per_io': cpu / max(res['ios'], 1) * 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('obj')
    p.add_argument('image')
    p.add_argument('config', choices=sorted(bv.CONFIGS))
    p.add_argument('--write', dest='rw', action='store_const',
                   const='write', default='read')
    p.add_argument('--depth', type=int, default=1)
    p.add_argument('--secs', type=float, default=3.0)
    p.add_argument('--poll', action='store_true',
                   help='the client polls its used ring')
    args = p.parse_args()
    if not shutil.which('perf'):
        sys.exit('profile_vhost_user: perf not found (apt-get install '
                 'linux-perf)')
    run_guest.LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        profile(args.obj, args, Path(tmp))


if __name__ == '__main__':
    main()
