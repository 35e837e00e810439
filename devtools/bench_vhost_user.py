# SPDX-License-Identifier: GPL-2.0-or-later
"""
make bench, primary tables: qemu-storage-daemon serves the image as a
vhost-user-blk export in an IOThread, and devtools/vhost-user-bench.c,
a front-end without a guest, keeps 4k random reads or writes in flight
on 1 or 2 virtqueues.  The daemon's CPU time per I/O, by kind of thread,
is what the block driver under the export costs; a TCG guest's vCPUs
would hide it (bench/README.md).

Used by bench.py; the daemon, its block nodes and their statistics are
those of make run's --vhost-user mode (run_guest.py).
"""

import contextlib
import copy
import csv
import json
import os
from pathlib import Path
import random
from stat import S_ISBLK
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import run_guest

BASELINE = 'file-io_uring'

# The daemon's protocol node for each configuration, as make run builds it
CONFIGS = {
    'file-threads': run_guest.Config(backend='threads'),
    'file-native': run_guest.Config(backend='native'),
    'file-io_uring': run_guest.Config(backend='io_uring'),
    'uring': run_guest.Config(backend='uring'),
    'uring-sqpoll': run_guest.Config(backend='uring', sqpoll=True,
                                     sqpoll_idle=10),
    'uring-nopoll': run_guest.Config(backend='uring'),
}
# The IOThread's options beyond its id: uring-nopoll shows what the
# IOThread's adaptive polling (poll-max-ns, 32 us by default) costs and
# gains
IOTHREAD_OPTS = {'uring-nopoll': ',poll-max-ns=0'}

# Bare fio on the same image, the ceiling, with the same io_uring
# features as uring (fixed file and fixed buffers, SQPOLL or not); fio
# sets up its rings with COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN
FIO = {
    'fio': [],
    'fio-fixed': ['--fixedbufs=1', '--registerfiles=1'],
    'fio-fixed-sqpoll': ['--fixedbufs=1', '--registerfiles=1',
                         '--sqthread_poll=1'],
}
# uring's configurations and their fio peers
URING_PEERS = {'uring': 'fio-fixed', 'uring-sqpoll': 'fio-fixed-sqpoll'}
# The configurations the goals judge, and the peers they are stated
# against: aio=io_uring, the reference of the tables, and aio=native,
# what production uses
GOAL_CONFIGS = {'uring': 'fio-fixed', 'uring-nopoll': 'fio-fixed',
                'uring-sqpoll': 'fio-fixed-sqpoll'}
GOAL_PEERS = {BASELINE: 'aio=io_uring', 'file-native': 'aio=native'}

# Kinds of the daemon's threads for the CPU split
KINDS = ('main', 'iothread', 'sq-thread', 'io-wq', 'worker', 'other')
KIND_LABELS = {'main': 'main', 'iothread': 'IOThr', 'sq-thread': 'sqp',
               'io-wq': 'wrk', 'worker': 'worker', 'other': 'other'}

# In QEMU 10.2 a vhost-user-blk export runs in one IOThread whatever its
# number of queues (there is no iothread-vq-mapping for exports)
EXPORT_QUEUES = 2


def env_list(name: str, default: str) -> List[int]:
    return [int(v) for v in os.environ.get(name, default).split()]


class Settings:
    """BENCH_VU_* from the environment"""
    # pylint: disable=too-few-public-methods
    def __init__(self, quick: bool):
        # 128 points per round on tmpfs and as many on the loop device,
        # 64 on the disk, 2 rounds: about 3.5 minutes each for tmpfs and
        # loop (BENCH_VU_SECS=3 for steadier numbers)
        self.secs = float(os.environ.get('BENCH_VU_SECS',
                                         '0.3' if quick else '0.6'))
        self.warmup = float(os.environ.get('BENCH_VU_WARMUP', '0.15'))
        self.reps = int(os.environ.get('BENCH_VU_REPS', '1' if quick
                                       else '2'))
        self.depths = env_list('BENCH_VU_DEPTHS', '1 8 32 128')
        # A disk is slow enough (here ~5k IOPS at QD1, ~50k at QD32) that
        # its points say little more than CPU per I/O: two depths keep
        # make bench within its time
        self.disk_depths = env_list('BENCH_VU_DISK_DEPTHS', '1 32')
        # The loop device at the depths of the goals only, to keep
        # make bench within its time
        self.loop_depths = env_list('BENCH_VU_LOOP_DEPTHS', '1 32')
        self.queues = [q for q in env_list('BENCH_VU_QUEUES', '1 2')
                       if q <= EXPORT_QUEUES]
        self.configs = os.environ.get('BENCH_VU_CONFIGS',
                                      ' '.join(CONFIGS)).split()
        if BASELINE not in self.configs:
            self.configs.insert(0, BASELINE)
        # fio's rows, run like a configuration but without the daemon
        self.ceilings = os.environ.get('BENCH_VU_FIO',
                                       ' '.join(URING_PEERS.values())).split()


class BenchError(Exception):
    pass


def progress(text: str) -> None:
    """Progress goes to stderr: stdout is the report (latest.txt)"""
    sys.stderr.write(text if text.startswith('\n') else '\r' + text)
    sys.stderr.flush()


def task_comm(pid: int, tid: str) -> str:
    with open(f'/proc/{pid}/task/{tid}/comm', encoding='utf-8') as f:
        return f.read().strip()


def task_start(pid: int, tid: str) -> int:
    """When thread @tid of @pid started, in clock ticks since boot"""
    with open(f'/proc/{pid}/task/{tid}/stat', encoding='utf-8') as f:
        stat = f.read()
    return int(stat[stat.rindex(')') + 2:].split()[19])


def is_block_device(path: str) -> bool:
    """A host block device (the loop device target), not a file"""
    return S_ISBLK(os.stat(path).st_mode)


def protocol_node(cfg: run_guest.Config, image: str) -> Dict[str, Any]:
    """make run's protocol node for @image; on a host block device the
    peers of uring (which opens both) use host_device instead of file"""
    node = run_guest.file_node(cfg, Path(image))
    if node['driver'] == 'file' and is_block_device(image):
        node['driver'] = 'host_device'
    return node


class Daemon:
    """
    qemu-storage-daemon exporting @image with the node of @cfg, and which
    of its threads is which.  The daemon does not name its threads (only
    qemu-system's -name debug-threads=on does, and it has no
    query-iothreads), so the roles come from the order of creation: the
    main thread, call_rcu, the monitor's I/O thread, then the IOThread of
    --object iothread; threads that appear later are the thread pool's
    workers, or io_uring's iou-wrk-* and iou-sqp-*, which the kernel names.
    """

    def __init__(self, name: str, cfg: run_guest.Config, image: str,
                 sock_dir: Path, iothread_opts: str = ''):
        self.sock = sock_dir / f'{name}.vhost-user'
        self.cfg = cfg
        export = ('type=vhost-user-blk,id=exp0,node-name=disk0,writable=on,'
                  f'addr.type=unix,addr.path={self.sock},'
                  f'num-queues={EXPORT_QUEUES},iothread=iot0,'
                  'fixed-iothread=on')
        args = ['--object', 'iothread,id=iot0' + iothread_opts,
                '--blockdev', json.dumps(protocol_node(cfg, image)),
                '--blockdev', 'driver=raw,node-name=disk0,file=disk0-file',
                '--export', export]
        self.qsd = run_guest.StorageDaemon(name, sock_dir, args)
        self.pid = 0
        self.iothreads: List[int] = []
        self.baseline: List[int] = []

    def start(self) -> None:
        self.qsd.start()
        assert self.qsd.pid
        self.pid = self.qsd.pid
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if time.monotonic() > deadline or self.qsd.pid is None:
                raise BenchError(f'{self.qsd.name}: no vhost-user socket; '
                                 f'see {self.qsd.log_path}')
            time.sleep(0.05)
        # The export prepares its uring ring at creation: with SQPOLL
        # the kernel's iou-sqp-* thread is there already
        tids = [t for t in os.listdir(f'/proc/{self.pid}/task')
                if int(t) != self.pid and not task_comm(self.pid, t)
                .startswith('iou-')]
        tids.sort(key=lambda t: (task_start(self.pid, t), int(t)))
        self.baseline = [self.pid] + [int(t) for t in tids]
        if len(tids) != 3:
            progress(f'\nwarning: {self.qsd.name} started with '
                     f'{len(tids) + 1} threads instead of 4 (main, call_rcu, '
                     'monitor, IOThread); taking the newest as the '
                     'IOThread\n')
        self.iothreads = [int(tids[-1])] if tids else []

    def kind(self, tid: int, comm: str) -> str:
        if comm.startswith('iou-'):
            return run_guest.thread_kind(comm)
        if tid == self.pid:
            return 'main'
        if tid in self.iothreads:
            return 'iothread'
        if tid not in self.baseline:
            return 'worker'
        return 'other'

    def uring_counts(self) -> Dict[str, int]:
        """The uring node's fixed and bounced requests so far"""
        if self.cfg.backend != 'uring':
            return {}
        spec = run_guest.node_stats(self.qsd.cmd)[0]
        return {k: spec.get(k, 0) for k in ('fixed-requests',
                                            'bounced-requests')}

    def stop(self) -> None:
        failure = self.qsd.stop()
        if failure:
            raise BenchError(f'{failure}; see {self.qsd.log_path}')


def run_point(client: str, daemon: Daemon, s: Settings, rw: str,
              queues: int, depth: int) -> Dict[str, Any]:
    """One run of the client; its results with the CPU split"""
    before = daemon.uring_counts()
    args = [client, '--socket', str(daemon.sock), '--queues', str(queues),
            '--depth', str(depth), '--time', str(s.secs),
            '--warmup', str(s.warmup), '--cpu-pid', str(daemon.pid),
            '--seed', str(random.randint(1, 1 << 30))]
    if rw == 'write':
        args.append('--write')
    try:
        r = subprocess.run(args, capture_output=True, text=True, check=False,
                           timeout=s.secs + s.warmup + 60)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{' '.join(args)}: timed out") from err
    if r.returncode != 0 or not r.stdout.strip():
        errors = [line for line in r.stderr.splitlines()
                  if line.startswith('vhost-user-bench:')] or ['no output']
        log = daemon.qsd.log_path.read_text(errors='replace').splitlines()
        raise BenchError(f'{errors[0]}; daemon: '
                         f"{log[-1] if log else 'nothing in its log'} "
                         f"(command: {' '.join(args)})")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    after = daemon.uring_counts()
    cpu = {k: 0.0 for k in KINDS}
    for t in res.pop('daemon_threads'):
        cpu[daemon.kind(t['tid'], t['comm'])] += t['cpu_s']
    ios = max(res['ios'], 1)
    row = {
        'iops': res['iops'],
        'lat_mean_us': res['lat_mean_us'],
        'lat_p99_us': res['lat_p99_us'],
        'cpu_us_per_io': sum(cpu.values()) / ios * 1e6,
        'client_cpu_us_per_io': res['client_cpu_s'] / ios * 1e6,
    }
    row.update({f'cpu_{k}': v / ios * 1e6 for k, v in cpu.items()})
    for k, v in after.items():
        row[k] = v - before.get(k, 0)
    return row


def run_fio(image: str, cfg: str, s: Settings, rw: str, queues: int,
            depth: int) -> Dict[str, Any]:
    """fio on @image, one job (and ring) per queue, for the same time as
    a client run"""
    args = ['fio', '--name=ceiling', f'--filename={image}', '--direct=1',
            '--ioengine=io_uring', f'--rw=rand{rw}', '--bs=4k',
            f'--iodepth={depth}', f'--numjobs={queues}', '--group_reporting',
            '--time_based', f'--runtime={round(s.secs * 1000)}ms',
            f'--ramp_time={round(s.warmup * 1000)}ms', '--norandommap',
            '--lat_percentiles=1', '--output-format=json'] + FIO[cfg]
    try:
        r = subprocess.run(args, capture_output=True, text=True, check=True,
                           timeout=s.secs + s.warmup + 60)
        job = json.loads(r.stdout[r.stdout.index('{'):])['jobs'][0]
    except (subprocess.SubprocessError, ValueError) as err:
        raise BenchError(f"{' '.join(args)}: {err}") from err
    io = job[rw]
    ios = max(io['total_ios'], 1)
    # getrusage() of the jobs over the run, SQ polling threads included
    cpu = (job['usr_cpu'] + job['sys_cpu']) / 100 * job['job_runtime'] / 1000
    row = {'iops': io['iops'],
           'lat_mean_us': io['lat_ns']['mean'] / 1000,
           'lat_p99_us': io['lat_ns']['percentile']['99.000000'] / 1000,
           'cpu_us_per_io': cpu / ios * 1e6, 'client_cpu_us_per_io': 0.0}
    row.update({f'cpu_{k}': 0.0 for k in KINDS})
    row['cpu_other'] = row['cpu_us_per_io']
    return row


def median_spread(vals: Sequence[float]):
    m = statistics.median(vals)
    return m, (max(vals) - min(vals)) / m if m else 0


METRICS = ['iops', 'lat_mean_us', 'lat_p99_us', 'cpu_us_per_io',
           'client_cpu_us_per_io'] + [f'cpu_{k}' for k in KINDS]


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        key = f"{r['config']}/{r['rw']}/{r['queues']}/{r['depth']}"
        groups.setdefault(key, []).append(r)
    summary = {}
    for key, rs in groups.items():
        sm: Dict[str, float] = {}
        for m in METRICS:
            sm[m], sm[m + '_spread'] = median_spread([r[m] for r in rs])
        for m in ('fixed-requests', 'bounced-requests'):
            if m in rs[0]:
                sm[m] = sum(r[m] for r in rs)
        summary[key] = sm
    return summary


def bench_target(client: str, target: str, image: str, s: Settings,
                 out_dir: str) -> Dict[str, Any]:
    """All points on @image: each configuration once per round, one daemon
    per configuration and round, the points in the same order each time"""
    rows: List[Dict[str, Any]] = []
    failures: List[Dict[str, Any]] = []
    points = [(rw, q, d) for rw in ('read', 'write') for q in s.queues
              for d in s.depths]
    total = s.reps * (len(s.configs) + len(s.ceilings)) * len(points)
    done = 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='vu-bench-') as tmp:
        for rep in range(s.reps):
            for cfg in s.ceilings:
                for rw, q, d in points:
                    point = dict(config=cfg, rw=rw, queues=q, depth=d,
                                 rep=rep)
                    try:
                        point.update(run_fio(image, cfg, s, rw, q, d))
                        rows.append(point)
                    except BenchError as err:
                        failures.append(dict(point, error=str(err)))
                    done += 1
                    progress(f'vhost-user {target}: {done}/{total} runs')
            for cfg in s.configs:
                def new_daemon(cfg: str = cfg) -> Daemon:
                    d = Daemon(f'vu-bench-{target}-{cfg}', CONFIGS[cfg],
                               image, Path(tmp),
                               IOTHREAD_OPTS.get(cfg, ''))
                    d.start()
                    return d
                daemon = new_daemon()
                try:
                    for rw, q, d in points:
                        point = dict(config=cfg, rw=rw, queues=q, depth=d,
                                     rep=rep)
                        try:
                            point.update(run_point(client, daemon, s, rw, q,
                                                   d))
                            rows.append(point)
                        except BenchError as err:
                            # Reported with the tables; the other points
                            # go on with a fresh daemon
                            failures.append(dict(point, error=str(err)))
                            with contextlib.suppress(BenchError):
                                daemon.stop()
                            daemon = new_daemon()
                        done += 1
                        progress(f'vhost-user {target}: {done}/{total} runs')
                finally:
                    daemon.stop()
    progress('\n')

    stamp = time.strftime('%Y%m%d-%H%M%S')
    fields = ['config', 'rw', 'queues', 'depth', 'rep'] + METRICS + \
        ['fixed-requests', 'bounced-requests']
    with open(os.path.join(out_dir, f'vhost-user-{target}-{stamp}.csv'),
              'w', encoding='utf-8') as f:
        w = csv.DictWriter(f, fieldnames=fields, restval='')
        w.writeheader()
        w.writerows(rows)
    summary = summarize(rows)
    report(target, image, s, summary, time.monotonic() - t0)
    for f in failures:
        print(f"FAILED: {f['config']} {f['rw']} {f['queues']} queue(s) "
              f"QD{f['depth']} round {f['rep'] + 1}: {f['error']}")
    chart(target, image, s, summary,
          os.path.join(out_dir, f'latest-vhost-user-{target}'))
    return {'path': image, 'summary': summary, 'failures': failures}


def histogram_png(base: str, title: str, columns: Sequence[str],
                  panels: Sequence[Any]) -> None:
    """Clustered histograms in @base.png (the data in @base.dat), two
    panels per line: @panels holds (title, {row label: values}), one
    value per column"""
    data = base + '.dat'
    with open(data, 'w', encoding='utf-8') as f:
        for ptitle, rows in panels:
            f.write(f'# {ptitle}\nconfig ' + ' '.join(columns) + '\n')
            for label, vals in rows.items():
                f.write(label + ' ' + ' '.join(f'{v:.2f}' for v in vals)
                        + '\n')
            f.write('\n\n')
    lines = (len(panels) + 1) // 2
    titles = '", "'.join(p[0] for p in panels)
    script = f'''
set terminal png size 1200,{50 + 425 * lines} font ",10" noenhanced
set output "{base}.png"
set multiplot layout {lines},2 title "{title}"
set style data histograms
set style histogram clustered gap 1
set style fill solid border -1
set key top left
set grid ytics
set xtics rotate by -30
set yrange [0:*]
array titles[{len(panels)}] = ["{titles}"]
do for [i=0:{len(panels) - 1}] {{
  set title titles[i + 1]
  plot for [c=2:{len(columns) + 1}] "{data}" index i using c:xtic(1) \\
       title columnhead(c)
}}
unset multiplot
'''
    subprocess.run(['gnuplot'], input=script, text=True, check=True)


def chart(target: str, image: str, s: Settings,
          summary: Dict[str, Dict[str, float]], base: str) -> None:
    """kIOPS and daemon CPU us/IO on one queue, read and write"""
    q = s.queues[0]
    panels = []
    for metric, scale, what in (('iops', 1000, 'kIOPS'),
                                ('cpu_us_per_io', 1, 'daemon CPU us/IO')):
        for rw in ('read', 'write'):
            panels.append((f'random {rw}, {what}', {
                cfg: [summary[k][metric] / scale
                      if (k := f'{cfg}/{rw}/{q}/{d}') in summary else 0
                      for d in s.depths]
                for cfg in s.configs + s.ceilings}))
    histogram_png(base, f'vhost-user-blk export on {target} ({image}), '
                  f'4k random, {q} queue, median of {s.reps}',
                  [f'QD{d}' for d in s.depths], panels)


def cell(r: Optional[Dict[str, float]], b: Optional[Dict[str, float]],
         metric: str, scale: float = 1) -> str:
    """The median, its ratio to the baseline's and its spread; points
    that failed in every round have none"""
    if r is None:
        return f"{'failed':>22}"
    v = r[metric]
    ratio = f'{v / b[metric]:5.2f}x' if b and b[metric] else '    -'
    return f"{v / scale:9.1f} {ratio} ±{r[metric + '_spread']:4.0%}"


def report(target: str, image: str, s: Settings,
           summary: Dict[str, Dict[str, float]], secs: float) -> None:
    def get(cfg: str, rw: str, q: int, d: int
            ) -> Optional[Dict[str, float]]:
        return summary.get(f'{cfg}/{rw}/{q}/{d}')

    print(f'\n=== vhost-user-blk export, {target}: {image}')
    print(f'qemu-storage-daemon, 1 IOThread, num-queues={EXPORT_QUEUES}; '
          f'devtools/vhost-user-bench: {s.secs:g} s per point after '
          f'{s.warmup:g} s warm-up, median of {s.reps} '
          f'({secs:.0f} s in all); fio-*: bare fio on the same image, '
          'one job per queue, with its own CPU time')
    if is_block_device(image):
        print('A host block device: the file-* rows use driver=host_device '
              'with that aio=, uring opens the device itself')
    for rw in ('read', 'write'):
        for q in s.queues:
            print(f"\n4k random {rw}, {q} queue{'s' if q > 1 else ''} "
                  f'(QD per queue; ratio to {BASELINE} ± spread)')
            print(f"{'config':15}" + ''.join(f'{"QD" + str(d):>22}'
                                             for d in s.depths))
            for metric, label, scale in (
                    ('iops', 'kIOPS', 1000),
                    ('lat_mean_us', 'mean latency us', 1),
                    ('lat_p99_us', 'p99 latency us', 1),
                    ('cpu_us_per_io', 'daemon CPU us/IO', 1)):
                print(f'  {label}')
                for cfg in s.configs + s.ceilings:
                    cells = ''
                    for d in s.depths:
                        cells += cell(get(cfg, rw, q, d),
                                      get(BASELINE, rw, q, d), metric, scale)
                    print(f'{cfg:15}{cells}')
            cpu_split(s, get, rw, q)
    uring_paths(s, summary)
    goals(s, get)


def cpu_split(s: Settings, get: Callable[..., Dict[str, float]], rw: str,
              q: int) -> None:
    """Daemon CPU us/IO by kind of thread at the lowest and a middle
    queue depth (QD1 and QD32 by default)"""
    kinds = [k for k in KINDS
             if any((get(c, rw, q, d) or {}).get(f'cpu_{k}', 0) >= 0.05
                    for c in s.configs for d in s.depths)]
    depths = [s.depths[0]] + ([32] if 32 in s.depths[1:] else
                              s.depths[1:2])
    print('  daemon CPU us/IO by thread: ' +
          ' | '.join(f'QD{d}' for d in depths) + ' (' +
          ' '.join(KIND_LABELS[k] for k in kinds) + ')')
    for cfg in s.configs:
        parts = []
        for d in depths:
            r = get(cfg, rw, q, d)
            b = get(BASELINE, rw, q, d)
            if r is None:
                parts.append(f"{'failed':>{7 * len(kinds) + 14}}")
                continue
            ratio = (f"{r['cpu_us_per_io'] / b['cpu_us_per_io']:4.2f}x"
                     if b else '   -')
            parts.append(' '.join(f"{r[f'cpu_{k}']:6.1f}" for k in kinds) +
                         f"  = {r['cpu_us_per_io']:5.1f} {ratio}")
        print(f'{cfg:15}' + ' | '.join(parts))


def goals(s: Settings, get: Callable[..., Optional[Dict[str, float]]]
          ) -> None:
    """The goals of the vhost-user path for 1 queue, each printed as met
    or not (never asserted), for each uring configuration against both
    peers of GOAL_PEERS (host_device's on a block device)"""
    if not {1, 32} <= set(s.depths) or 1 not in s.queues:
        return
    print('\nGoals (1 queue), against both aio=io_uring and aio=native, '
          'met or NOT met:\n'
          "  QD32: >= 1.3x the peer's IOPS at <= its CPU/IO, or <= 0.7x its "
          'CPU/IO where the device is the limit;\n'
          "        >= 80% of bare fio's IOPS\n"
          "  QD1:  CPU/IO <= the cheaper peer's; mean latency <= 0.85x "
          "aio=io_uring's and <= aio=native's")
    for rw in ('read', 'write'):
        peers = {p: (get(p, rw, 1, 1), get(p, rw, 1, 32))
                 for p in GOAL_PEERS}
        for cfg, fio in GOAL_CONFIGS.items():
            u1, u32 = get(cfg, rw, 1, 1), get(cfg, rw, 1, 32)
            if not (cfg in s.configs and u1 and u32):
                continue
            for text, ok in goal_checks(u1, u32, peers, fio,
                                        get(fio, rw, 1, 32)):
                print(f"  {rw:5} {cfg:12}  {text} -> "
                      f"{'met' if ok else 'NOT met'}")


def goal_checks(u1: Dict[str, float], u32: Dict[str, float],
                peers: Dict[str, Tuple[Optional[Dict[str, float]],
                                       Optional[Dict[str, float]]]],
                fio: str, f32: Optional[Dict[str, float]]
                ) -> List[Tuple[str, bool]]:
    """The goals for one uring configuration at QD1 (@u1) and QD32
    (@u32): (what was measured, met); @peers maps GOAL_PEERS to their
    QD1 and QD32 points, @f32 is bare @fio at QD32; a peer without
    results is left out"""
    checks = []
    for p, label in GOAL_PEERS.items():
        p32 = peers[p][1]
        if p32:
            iops = u32['iops'] / p32['iops']
            cpu = u32['cpu_us_per_io'] / p32['cpu_us_per_io']
            checks.append((f'QD32 against {label}: {iops:.2f}x IOPS at '
                           f'{cpu:.2f}x CPU/IO',
                           (iops >= 1.3 and cpu <= 1) or cpu <= 0.7))
    if f32:
        checks.append((f'QD32 >= 80% of {fio}: '
                       f"{u32['iops'] / f32['iops']:.0%}",
                       u32['iops'] >= 0.8 * f32['iops']))
    qd1 = [(pt, label) for p, label in GOAL_PEERS.items()
           if (pt := peers[p][0]) is not None]
    if qd1:
        cheaper, label = min(qd1, key=lambda pl: pl[0]['cpu_us_per_io'])
        checks.append((f"QD1 CPU/IO <= the cheaper peer's ({label}): "
                       f"{u1['cpu_us_per_io']:.1f} against "
                       f"{cheaper['cpu_us_per_io']:.1f} us",
                       u1['cpu_us_per_io'] <= cheaper['cpu_us_per_io']))
    b1, n1 = peers[BASELINE][0], peers['file-native'][0]
    if b1:
        lat = u1['lat_mean_us'] / b1['lat_mean_us']
        checks.append((f'QD1 mean latency <= 0.85x aio=io_uring: '
                       f'{lat:.2f}x', lat <= 0.85))
    if n1:
        checks.append((f"QD1 mean latency <= aio=native's: "
                       f"{u1['lat_mean_us']:.0f} against "
                       f"{n1['lat_mean_us']:.0f} us",
                       u1['lat_mean_us'] <= n1['lat_mean_us']))
    return checks


def uring_paths(s: Settings, summary: Dict[str, Dict[str, float]]) -> None:
    """How the uring node's requests reached the front-end's memory"""
    for cfg in s.configs:
        if CONFIGS[cfg].backend != 'uring':
            continue
        fixed = sum(v.get('fixed-requests', 0) for k, v in summary.items()
                    if k.startswith(cfg + '/'))
        bounced = sum(v.get('bounced-requests', 0)
                      for k, v in summary.items() if k.startswith(cfg + '/'))
        note = ''
        if not fixed:
            note = (' (the export does not register the front-end\'s '
                    'memory as fixed buffers yet: every request bounces)')
        print(f'{cfg}: requests through fixed buffers {fixed}, through the '
              f'bounce buffer {bounced}{note}')


def run(client: str, targets: Dict[str, Tuple[str, str]], out_dir: str,
        quick: bool) -> Dict[str, Any]:
    """
    The primary tables for each of @targets, name -> (path, kind): a
    'tmpfs' image at the depths of BENCH_VU_DEPTHS, a 'loop' device at
    those of BENCH_VU_LOOP_DEPTHS, an image on a 'disk' at those of
    BENCH_VU_DISK_DEPTHS
    """
    s = Settings(quick)
    depths = {'tmpfs': s.depths, 'loop': s.loop_depths,
              'disk': s.disk_depths}
    run_guest.LOGS.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {
        'settings': {'secs': s.secs, 'warmup': s.warmup, 'reps': s.reps,
                     'depths': s.depths, 'disk_depths': s.disk_depths,
                     'loop_depths': s.loop_depths, 'queues': s.queues,
                     'configs': s.configs},
        'targets': {}}
    for target, (path, kind) in targets.items():
        ts = copy.copy(s)
        ts.depths = depths[kind]
        result['targets'][target] = bench_target(client, target, path, ts,
                                                 out_dir)
    return result
