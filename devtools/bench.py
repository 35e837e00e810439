#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# make bench.  Primary tables: qemu-storage-daemon's vhost-user-blk
# export driven by devtools/vhost-user-bench (bench_vhost_user.py), on a
# tmpfs image, on a loop device with direct I/O over it and on an image
# on the root file system.  Secondary tables:
# the uring block driver against file with aio=threads, native and
# io_uring and bare-metal fio, at the driver level (qemu-img bench), and
# in the TCG guest of make run.  Configurations are interleaved and
# repeated.
#
# Usage: bench.py OBJDIR OUTDIR [--quick]

import contextlib
import csv
import dataclasses
import datetime
import io
import json
import os
from pathlib import Path
import platform
import re
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_guest  # noqa: E402  pylint: disable=wrong-import-position
import bench_vhost_user  # noqa: E402  pylint: disable=wrong-import-position
from bench_vhost_user import median_spread, progress  # noqa: E402  pylint: disable=wrong-import-position

OBJ, OUT = sys.argv[1], sys.argv[2]
QUICK = '--quick' in sys.argv
QEMU_IMG = os.path.join(OBJ, 'qemu-img')
IMAGE = os.environ.get('BENCH_IMAGE', '/dev/shm/uring-bench.img')
# The second target of the vhost-user tables: an image on a disk, the
# root file system here (ext4 on virtio-blk); none skips it
DISK_IMAGE = os.environ.get('BENCH_DISK_IMAGE', '/var/tmp/uring-bench.img')
IMAGE_SIZE = 1 << 30
VHOST_USER_CLIENT = os.path.join(OBJ, 'vhost-user-bench')
DEPTHS = [1, 8, 32, 128]
# The driver-level tables are secondary since the vhost-user ones came:
# 2 rounds, so that make bench on a fresh machine, build, vhost-user and
# guest level included, stays within 15 minutes
REPS = int(os.environ.get('BENCH_REPS', '2'))
# Requests per run: ~0.1-0.2 s per run on this machine (half of what
# they were before the vhost-user tables)
COUNT = {1: 3000, 8: 10000, 32: 15000, 128: 20000}
if QUICK:
    COUNT = {d: c // 4 for d, c in COUNT.items()}

BASELINE = 'file-io_uring'

# name -> qemu-img bench arguments selecting the driver for @path
CONFIGS = {
    'file-threads': lambda path: ['-f', 'raw', '-i', 'threads', path],
    'file-native': lambda path: ['-f', 'raw', '-i', 'native', path],
    'file-io_uring': lambda path: ['-f', 'raw', '-i', 'io_uring', path],
    'uring': lambda path: ['--image-opts',
                           'driver=raw,file.driver=uring,'
                           f'file.filename={path}'],
    'uring-sqpoll': lambda path: ['--image-opts',
                                  'driver=raw,file.driver=uring,'
                                  f'file.filename={path},'
                                  'file.sqpoll=on,file.sqpoll-idle=10'],
}

# fio on the host: the ceiling, with the same io_uring features
FIO = bench_vhost_user.FIO


def run_qemu_img(path, cfg, rw, depth):
    n = COUNT[depth]
    args = [QEMU_IMG, 'bench', '-t', 'none', '-d', str(depth), '-c', str(n),
            '--random', '--registered-buf', '--latency', '--cpu-time']
    if rw == 'write':
        args.append('-w')
    args += CONFIGS[cfg](path)
    out = subprocess.run(args, check=True, capture_output=True,
                         text=True).stdout
    secs = float(re.search(r'Run completed in ([\d.]+) seconds', out)[1])
    lat = re.search(r'mean ([\d.]+), median ([\d.]+), p99 ([\d.]+)', out)
    # CPU time of the run alone, without opening and closing the image,
    # of all threads of the process: main loop, io-wq workers (iou-wrk)
    # and the SQ polling thread (iou-sqp) are in its thread group.
    cpu = float(re.search(r'CPU time: ([\d.]+) seconds', out)[1])
    return {
        'iops': n / secs,
        'lat_mean_us': float(lat[1]),
        'lat_p99_us': float(lat[3]),
        'cpu_us_per_io': cpu / n * 1e6,
    }


def run_fio(path, cfg, rw, depth):
    n = COUNT[depth]
    args = ['fio', '--name=bench', f'--filename={path}', '--direct=1',
            '--ioengine=io_uring', f'--rw=rand{rw}', '--bs=4k',
            f'--iodepth={depth}', f'--number_ios={n}',
            f'--size={IMAGE_SIZE}', '--randrepeat=1', '--norandommap',
            '--lat_percentiles=1', '--output-format=json'] + FIO[cfg]
    out = subprocess.run(args, check=True, capture_output=True,
                         text=True).stdout
    job = json.loads(out[out.index('{'):])['jobs'][0]
    io = job[rw]
    # fio's getrusage() of the job during the run: all its threads,
    # including its SQ polling thread, without start-up
    cpu = (job['usr_cpu'] + job['sys_cpu']) / 100 * job['job_runtime'] / 1000
    return {
        'iops': io['iops'],
        'lat_mean_us': io['lat_ns']['mean'] / 1000,
        'lat_p99_us': io['lat_ns']['percentile']['99.000000'] / 1000,
        'cpu_us_per_io': cpu / max(io['total_ios'], 1) * 1e6,
    }


def fs_type(path):
    """ext4, tmpfs, ... (stat -f says ext2/ext3 for ext4); of the mounts
    stacked on the directory, the last one is the one in use"""
    if path == 'none':
        return ''
    out = subprocess.run(['findmnt', '-n', '-o', 'FSTYPE', '-T',
                          os.path.dirname(path)],
                         capture_output=True, text=True).stdout.split()
    return out[-1] if out else ''


def machine():
    cpu = next((line.split(':', 1)[1].strip()
                for line in open('/proc/cpuinfo')
                if line.startswith('model name')), 'unknown')
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'kernel': platform.release(),
        'cpu': cpu,
        'cpus': os.cpu_count(),
        'memory_gib': round(os.sysconf('SC_PAGE_SIZE') *
                            os.sysconf('SC_PHYS_PAGES') / 2**30),
        'image': IMAGE,
        'image_fs': fs_type(IMAGE),
        'disk_image': DISK_IMAGE,
        'disk_image_fs': fs_type(DISK_IMAGE),
        'reps': REPS,
        # Other work on the machine shows in the spreads; say how busy it
        # was (1, 5 and 15 minute load averages)
        'load_start': ' '.join(f'{v:.2f}' for v in os.getloadavg()),
    }


@contextlib.contextmanager
def loop_device(image):
    """A loop device with direct I/O over @image for the duration, or
    None (BENCH_BLOCKDEV=none, or losetup failed): a host block device
    for both the vhost-user and the driver-level tables"""
    if os.environ.get('BENCH_BLOCKDEV', 'loop') != 'loop':
        yield None
        return
    r = subprocess.run(['losetup', '-f', '--show', '--direct-io=on', image],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        print(f'no loop device: {r.stderr.strip()}')
        yield None
        return
    loop = r.stdout.strip()
    try:
        # losetup may keep the device without direct I/O (the backing file
        # system refused it): say so, as the numbers would not compare
        dio = Path(f'/sys/block/{os.path.basename(loop)}/loop/dio')
        if dio.exists() and dio.read_text(encoding='utf-8').strip() != '1':
            print(f'warning: {loop} runs without direct I/O')
        yield loop
    finally:
        subprocess.run(['losetup', '-d', loop], check=False)


def fill(path):
    """A fully allocated image, so that reads and writes see the same
    file"""
    subprocess.run([QEMU_IMG, 'create', '-q', '-f', 'raw', path,
                    str(IMAGE_SIZE)], check=True)
    subprocess.run(['fio', '--name=fill', f'--filename={path}',
                    '--rw=write', '--bs=1M', f'--size={IMAGE_SIZE}',
                    '--direct=1', '--output=/dev/null'], check=True)


def section(result, name, fn, *args):
    """Run one part of the benchmark into result[name]; its duration
    goes to the report"""
    t0 = time.monotonic()
    result[name] = fn(*args)
    secs = time.monotonic() - t0
    label = {'targets': 'driver'}.get(name, name)
    result['machine'].setdefault('section_secs', {})[label] = round(secs)
    progress(f'\n{label}: {secs:.0f} s\n')


def main():
    t0 = time.monotonic()
    os.makedirs(OUT, exist_ok=True)
    fill(IMAGE)
    result = {'machine': machine()}
    m = result['machine']
    print(f"make bench, {m['date'][:16]}: Linux {m['kernel']}, "
          f"{m['cpus']} x {m['cpu']}, load average {m['load_start']}")
    try:
        with loop_device(IMAGE) as loop:
            m['loop_device'] = loop or 'none'
            if os.environ.get('BENCH_VU', '1') != '0':
                # name -> (path, which depths: BENCH_VU_DEPTHS, or those
                # of the loop device or of the disk)
                vu_targets = {'tmpfs': (IMAGE, 'tmpfs')}
                if loop:
                    vu_targets['loop'] = (loop, 'loop')
                if DISK_IMAGE != 'none':
                    fill(DISK_IMAGE)
                    vu_targets[m['disk_image_fs'] or 'disk'] = (DISK_IMAGE,
                                                                'disk')
                print('\n######## vhost-user-blk export, no guest (primary)')
                section(result, 'vhost_user', bench_vhost_user.run,
                        VHOST_USER_CLIENT, vu_targets, OUT, QUICK)
            if os.environ.get('BENCH_DRIVER', '1') != '0':
                print('\n######## driver level, qemu-img bench (secondary)')
                section(result, 'targets', driver_bench, loop)
    finally:
        for path in (IMAGE, DISK_IMAGE):
            if path != 'none' and os.path.exists(path):
                os.unlink(path)

    if os.environ.get('BENCH_GUEST', '1') != '0':
        print('\n######## guest level, TCG (secondary)')
        section(result, 'guest', guest_bench)

    m['load_end'] = ' '.join(f'{v:.2f}' for v in os.getloadavg())
    m['total_secs'] = round(time.monotonic() - t0)
    print(f"\nmake bench: {m['total_secs']} s after the build "
          f"({', '.join(f'{k} {v} s' for k, v in m['section_secs'].items())}"
          f"); load average at the end {m['load_end']}")
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for path in (os.path.join(OUT, f'driver-{stamp}.json'),
                 os.path.join(OUT, 'latest.json')):
        with open(path, 'w') as f:
            json.dump(result, f, indent=1)


def driver_bench(loop):
    """The driver-level tables: the tmpfs file itself, and @loop, a host
    block device over it (or None): on tmpfs the kernel hands every
    io_uring request to an io-wq worker (no IOCB_NOWAIT support), a loop
    device with direct I/O does not."""
    targets = {'file': IMAGE}
    if loop:
        targets['loop'] = loop
    return {name: {'path': path, 'summary': bench_target(name, path)}
            for name, path in targets.items()}


# Guest level: the guest of make run, per backend (run_guest.Config)
GUEST_CONFIGS = {
    'file-threads': {'backend': 'threads'},
    'file-native': {'backend': 'native'},
    'file-io_uring': {'backend': 'io_uring'},
    'uring': {'backend': 'uring'},
    'uring-sqpoll': {'backend': 'uring', 'sqpoll': True,
                     'sqpoll_idle': 10},
}
GUEST_SECS = int(os.environ.get('BENCH_GUEST_SECS', '2'))
# One round by default: the vhost-user tables took its time
GUEST_REPS = int(os.environ.get('BENCH_GUEST_REPS', '1'))
GUEST_JOBS = ['bench-read-qd1', 'bench-read-qd32', 'bench-write-qd1',
              'bench-write-qd32']
CPU_KINDS = ('vcpu', 'iothread', 'main', 'sq-thread', 'io-wq')


def guest_run(cfg, overrides):
    """The benchmark part of make run's guest with one backend"""
    # The other settings of make run (ACCEL, GUEST_MEM, ...) apply
    config = dataclasses.replace(
        run_guest.Config.from_env(dict(os.environ)),
        # Only the timed jobs: make check runs the verified tests of
        # every backend
        guest_bench=GUEST_SECS, guest_tests=False, fio_size='1M',
        **overrides)
    out = io.StringIO()
    result = run_guest.run(config, out)
    if not result.passed or not result.bench:
        progress(out.getvalue()[-3000:])
        raise RuntimeError(f'guest run {cfg} failed')
    return result.bench


def guest_bench():
    runs = {cfg: [] for cfg in GUEST_CONFIGS}
    # Interleaved like the driver level: each backend once per round
    for rep in range(GUEST_REPS):
        for cfg, env in GUEST_CONFIGS.items():
            progress(f'guest: round {rep + 1}/{GUEST_REPS}, {cfg:15}')
            runs[cfg].append(guest_run(cfg, env))
    progress('\n')
    summary = {cfg: guest_summarize(rs) for cfg, rs in runs.items()}
    guest_report(summary)
    return {'runs': runs, 'summary': summary}


def guest_summarize(runs):
    s = {'jobs': {}}
    for j in GUEST_JOBS:
        iops, iops_spread = median_spread([r['jobs'][j]['iops']
                                           for r in runs])
        lat, lat_spread = median_spread([r['jobs'][j]['lat_us']
                                         for r in runs])
        s['jobs'][j] = {'iops': iops, 'iops_spread': iops_spread,
                        'lat_us': lat, 'lat_us_spread': lat_spread}
    s['cpu_us_per_io'] = {
        k: statistics.median([r['cpu_us_per_io'].get(k, 0) for r in runs])
        for k in CPU_KINDS}
    s['cpu_us_per_io_total'], s['cpu_us_per_io_total_spread'] = \
        median_spread([r['cpu_us_per_io_total'] for r in runs])
    return s


def guest_report(summary):
    base = summary[BASELINE]
    print(f'\n=== guest: fio in the TCG guest of make run, {GUEST_SECS} s per '
          f'job, median of {GUEST_REPS} (ratio to {BASELINE} ± spread)')
    print(f"{'config':15}" + ''.join(f'{j[6:]:>22}' for j in GUEST_JOBS))
    for label, metric in (('IOPS', 'iops'), ('mean lat us', 'lat_us')):
        print(f'  {label}')
        for cfg, r in summary.items():
            cells = ''
            for j in GUEST_JOBS:
                v, b = r['jobs'][j][metric], base['jobs'][j][metric]
                sp = r['jobs'][j][metric + '_spread']
                cells += f'{v:9.0f} {v / b:5.2f}x ±{sp:4.0%}'
            print(f'{cfg:15}{cells}')
    print('  host CPU us/IO, all jobs: total (vcpu iothread main sq-thread '
          'io-wq)')
    for cfg, r in summary.items():
        cpu = r['cpu_us_per_io']
        split = ' '.join(f'{cpu[k]:.0f}' for k in CPU_KINDS)
        total = r['cpu_us_per_io_total']
        ratio = total / base['cpu_us_per_io_total']
        sp = r['cpu_us_per_io_total_spread']
        print(f'{cfg:15}{total:9.0f} {ratio:5.2f}x ±{sp:4.0%}   ({split})')


def describe_failure(e):
    """What a failed run died of, in a few words"""
    if e.returncode < 0:
        return f'killed by {signal.Signals(-e.returncode).name}, retried'
    return f'exit status {e.returncode}, retried'


def bench_target(target, path):
    rows = []
    retried = []
    names = list(CONFIGS) + list(FIO)
    total = REPS * 2 * len(DEPTHS) * len(names)
    done = 0
    # Interleave: every configuration once per round, so drift of the
    # machine (other load, tmpfs state) spreads over all of them.
    for rep in range(REPS):
        for rw in ('read', 'write'):
            for depth in DEPTHS:
                for cfg in names:
                    run = run_fio if cfg in FIO else run_qemu_img
                    try:
                        r = run(path, cfg, rw, depth)
                    except subprocess.CalledProcessError as e:
                        # Once more, and say so under the table
                        retried.append(f'{cfg} {rw} QD{depth}: '
                                       f'{describe_failure(e)}')
                        r = run(path, cfg, rw, depth)
                    r.update(config=cfg, rw=rw, depth=depth, rep=rep)
                    rows.append(r)
                    done += 1
                    progress(f'{target}: {done}/{total} runs')
    progress('\n')

    stamp = time.strftime('%Y%m%d-%H%M%S')
    with open(os.path.join(OUT, f'driver-{target}-{stamp}.csv'), 'w') as f:
        w = csv.DictWriter(f, fieldnames=['config', 'rw', 'depth', 'rep',
                                          'iops', 'lat_mean_us',
                                          'lat_p99_us', 'cpu_us_per_io'])
        w.writeheader()
        w.writerows(rows)
    summary = summarize(rows)
    print(f'\n=== {target}: {path}')
    report(summary, names, TARGET_LABELS.get(target, target))
    for line in retried:
        print(f'RETRIED: {line}')
    chart(summary, names, os.path.join(OUT, f'latest-{target}'), path)
    return summary


def summarize(rows):
    out = {}
    for r in rows:
        key = f"{r['config']}/{r['rw']}/{r['depth']}"
        out.setdefault(key, []).append(r)
    summary = {}
    for key, rs in out.items():
        s = {}
        for m in ('iops', 'lat_mean_us', 'lat_p99_us', 'cpu_us_per_io'):
            s[m], s[m + '_spread'] = median_spread([r[m] for r in rs])
        summary[key] = s
    return summary


def report(summary, names, where):
    def get(cfg, rw, d, m):
        return summary[f'{cfg}/{rw}/{d}'][m]

    for rw in ('read', 'write'):
        print(f'\n4k random {rw}, median of {REPS} (ratio to {BASELINE}; '
              'spread = (max-min)/median)')
        print(f"{'config':18}" + ''.join(f'{"QD" + str(d):>22}'
                                         for d in DEPTHS))
        for metric, label in (('iops', 'kIOPS'),
                              ('lat_mean_us', 'mean lat us'),
                              ('lat_p99_us', 'p99 lat us'),
                              ('cpu_us_per_io', 'CPU us/IO')):
            print(f'  {label}')
            for cfg in names:
                cells = ''
                for d in DEPTHS:
                    v = get(cfg, rw, d, metric)
                    base = get(BASELINE, rw, d, metric)
                    sp = get(cfg, rw, d, metric + '_spread')
                    shown = v / 1000 if metric == 'iops' else v
                    cells += f'{shown:9.1f} {v / base:5.2f}x ±{sp:4.0%}'
                print(f'{cfg:18}{cells}')

    targets(summary, where)


URING_PEERS = bench_vhost_user.URING_PEERS


# What the driver-level targets are, for the goal lines
TARGET_LABELS = {'file': 'tmpfs', 'loop': 'the loop device'}
# The rows of the summary under the tables: uring against the peers
SUMMARY_CONFIGS = ('file-io_uring', 'file-native') + tuple(URING_PEERS)


def targets(summary, where):
    """uring against aio=io_uring and aio=native at QD1 and QD32, and the
    issue's targets, printed as met or not, never asserted"""
    print(f'\nuring and its peers on {where} (median kIOPS, CPU us/IO):')
    print(f"{'':8}{'config':14}{'QD1 kIOPS':>10}{'CPU':>7}"
          f"{'QD32 kIOPS':>12}{'CPU':>7}")
    for rw in ('read', 'write'):
        for cfg in SUMMARY_CONFIGS:
            cells = ''.join(
                f"{summary[f'{cfg}/{rw}/{d}']['iops'] / 1000:{w}.1f}"
                f"{summary[f'{cfg}/{rw}/{d}']['cpu_us_per_io']:7.1f}"
                for d, w in ((1, 10), (32, 12)))
            print(f'  {rw:5} {cfg:14}{cells}')
    print(f'\nTargets (driver level on {where}; uring with SQPOLL off and '
          'on):')
    for rw in ('read', 'write'):
        b1, b32 = (summary[f'{BASELINE}/{rw}/{d}'] for d in (1, 32))
        for cfg, peer in URING_PEERS.items():
            u1, u32 = (summary[f'{cfg}/{rw}/{d}'] for d in (1, 32))
            iops = u32['iops'] / b32['iops']
            cpu = u32['cpu_us_per_io'] / b32['cpu_us_per_io']
            lat = u1['lat_mean_us'] / b1['lat_mean_us']
            fio = u32['iops'] / summary[f'{peer}/{rw}/32']['iops']
            checks = (
                (f'QD32 >= 1.3x the IOPS of aio=io_uring at <= its CPU per '
                 f'I/O on {where}: {iops:.2f}x IOPS, {cpu:.2f}x CPU/IO',
                 iops >= 1.3 and cpu <= 1),
                (f'QD1 mean latency <= 0.85x aio=io_uring: {lat:.2f}x',
                 lat <= 0.85),
                (f'QD32 >= 85% of {peer}: {fio:.0%}', fio >= 0.85),
            )
            for text, ok in checks:
                print(f"  {rw:5} {cfg:12}  {text} -> "
                      f"{'met' if ok else 'NOT met'}")


def chart(summary, names, base, path):
    panels = [(f'random {rw}', {
        cfg: [summary[f'{cfg}/{rw}/{d}']['iops'] / 1000 for d in DEPTHS]
        for cfg in names}) for rw in ('read', 'write')]
    bench_vhost_user.histogram_png(
        base, f'4k random I/O on {path}, kIOPS (median of {REPS})',
        [f'QD{d}' for d in DEPTHS], panels)


if __name__ == '__main__':
    main()
