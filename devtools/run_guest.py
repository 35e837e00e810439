#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
make run: boot a small Debian guest (devtools/make-initramfs.sh) on a
disk served by the uring driver (or another backend), run fio with
crc32c verification in the guest (random writes and reads at QD1 and
QD32, fdatasync after every write, discard), read the node's statistics
over QMP while the guest waits, and print a summary.

  devtools/run_guest.py [--vhost-user] [--no-build]

--vhost-user (or VHOST_USER=1): qemu-storage-daemon serves the disk as
a vhost-user-blk export and the guest, with memfd RAM, uses
vhost-user-blk-pci; the statistics come from the daemon's monitor.
The export registers the guest memory that it maps, so the guest's I/O
must use fixed buffers there too (see VHOST_USER_MAX_BOUNCED).
--no-build (or SKIP_BUILD=1): do not run devtools/build.sh.

Settings (environment):
  BACKEND        uring (default) | io_uring | native | threads; the
                 last three are driver=file,aio=BACKEND
  SQPOLL         on | off (default off), uring only
  SQPOLL_IDLE    SQ thread idle time in ms (default: the driver's)
  FIXED_BUFFERS  on | off | auto (default: the driver's, auto)
  QUEUE_DEPTH    ring entries (default: the driver's)
  CONTROLLER     virtio (default) | virtio-scsi | ahci | nvme:
                 virtio-blk-pci, virtio-scsi-pci with scsi-hd,
                 ich9-ahci with ide-hd, or nvme; the last two in the
                 main loop
  NUM_IOTHREADS  IOThreads for a virtio controller (default 1; 0: main
                 loop; >1: iothread-vq-mapping, round robin)
  NUM_QUEUES     request virtqueues (default: GUEST_CPUS)
  ACCEL          tcg (default) | kvm
  MACHINE        q35 (default) | pc
  GUEST_MEM      guest RAM (default 1G)
  GUEST_CPUS     vCPUs (default 2)
  DISK           image (default build/guest/disk.img, recreated)
  DISK_SIZE      image size (default 256M)
  FIO_SIZE       bytes per fio region, 4 regions (default 16M; 32M
                 with MIGRATE=1)
  FIO_ENGINE     ioengine in the guest: io_uring (default) | libaio
  TIMEOUT        seconds for the guest to finish (default 900)
  GUEST_BENCH    seconds of each timed fio job (4k random read and
                 write, QD1 and QD32) after the tests, with the host
                 CPU time per I/O of QEMU's threads (default 0: none)
  GUEST_TESTS    0 skips the verified tests and the checks that need
                 them (discard, flushes), for benchmark runs (default 1)

Modes (environment, one at a time):
  COMPARE=1      run again with BACKEND=threads and print both runs'
                 latencies with their ratio
  MIGRATE=1      live (precopy) migration to a second QEMU on the same
                 image once the guest's first write job did a quarter
                 of its writes; checks first that postcopy-ram is
                 refused while guest RAM is pinned
  ENOSPC=1       the image is a sparse file on an 8 MiB tmpfs that the
                 guest fills: the VM must stop (werror=stop) with
                 nospace, then the tmpfs grows and the guest continues
  EIO=1          qemu-storage-daemon exports the image over FUSE through
                 blkdebug nodes that fail one write, then one read with
                 EIO; the VM must stop (werror/rerror=stop) each time,
                 and continue once the fault is removed
  MEMLOCK_USER=1 QEMU without CAP_IPC_LOCK and an 8 MiB RLIMIT_MEMLOCK:
                 guest RAM cannot be pinned, requests must bounce
  NOBODY=1       the same, with QEMU running as user nobody

Fails when a fio job or its verification failed, the guest did not
finish, QEMU or the daemon did not exit cleanly, no discard reached the
image, a mode's condition did not hold, or, for the uring driver, a ring
is missing or the requests did not take the path that the node's
buffers imply (fixed buffers when guest RAM is registered and pinned).
Logs are in build/guest/logs/.
"""

import contextlib
from dataclasses import dataclass, field, replace
import fcntl
import json
import logging
import os
from pathlib import Path
import pwd
import grp
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from typing import (Any, Callable, Dict, List, Optional,
                    Sequence, TextIO, Tuple)

TOP = Path(__file__).resolve().parent.parent
BUILD = TOP / 'build'
# SANITIZE=1 runs the ASan+UBSan build, as devtools/lib.sh does
OBJ = BUILD / ('obj-san' if os.environ.get('SANITIZE') else 'obj')
QEMU_TREE = BUILD / 'qemu'
GUEST_DIR = BUILD / 'guest'
LOGS = GUEST_DIR / 'logs'
VENV_PYTHON = OBJ / 'pyvenv' / 'bin' / 'python3'
QEMU = OBJ / 'qemu-system-x86_64'
QSD = OBJ / 'storage-daemon' / 'qemu-storage-daemon'
BUILD_TARGETS = 'qemu-system-x86_64 storage-daemon/qemu-storage-daemon'


def build_and_reexec(argv: List[str]) -> None:
    """
    Build QEMU unless --no-build, then run this script again with the
    build's Python (its venv), which the QEMU tree's library is for.
    """
    if '-h' in argv or '--help' in argv:
        print(__doc__.strip())
        sys.exit(0)
    if '--no-build' not in argv and not os.environ.get('SKIP_BUILD'):
        subprocess.run([str(TOP / 'devtools' / 'build.sh')], check=True,
                       env=dict(os.environ, BUILD_TARGETS=BUILD_TARGETS))
    if not VENV_PYTHON.exists():
        sys.exit(f'{VENV_PYTHON} is missing: run devtools/build.sh')
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, '--no-build'] +
             [a for a in argv if a != '--no-build'])


# The QEMU tree's own library can only be imported once it is built:
# build first when run as a script
if __name__ == '__main__' and Path(sys.prefix) != VENV_PYTHON.parent.parent:
    build_and_reexec(sys.argv[1:])

sys.path.insert(0, str(QEMU_TREE / 'python'))
sys.path.insert(0, str(QEMU_TREE / 'tests' / 'functional'))
# qemu_test looks for the build directory when imported
os.environ.setdefault('QEMU_BUILD_ROOT', str(OBJ))

# pylint: disable=wrong-import-position
from qemu.machine import QEMUMachine  # noqa: E402
from qemu.machine.machine import AbnormalShutdown  # noqa: E402
from qemu.qmp import ExecuteError, QMPError  # noqa: E402
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402
from qemu_test import exec_command, wait_for_console_pattern  # noqa: E402


class ConfigError(Exception):
    """A setting that make run does not accept"""


class GuestError(Exception):
    """The guest or QEMU stopped the run before its end"""


# Marker lines of devtools/guest/init
# What --vhost-user lets bounce: requests whose memory O_DIRECT cannot use
# whatever the path, such as the guest kernel's first read of the disk
# (4 KiB in two iovecs, the first 512 bytes long), must be copied.  Without
# the export's registration, every request bounces.
VHOST_USER_MAX_BOUNCED = 4

MARKER = re.compile(r'^(GUEST-|FIO-|VERIFY-|BENCH-|READY-FOR-STATS)')
JOBS = ('write-qd1', 'write-qd32', 'read-qd1', 'read-qd32', 'flush',
        'trim-fill', 'trim', 'trim-zero', 'reverify')
DISK_NAMES = {'virtio': 'vda', 'virtio-scsi': 'sda', 'ahci': 'sda',
              'nvme': 'nvme0n1'}
# The controllers that have virtqueues and IOThreads
VIRTIO_CONTROLLERS = ('virtio', 'virtio-scsi')
MiB = 1 << 20
# Seconds without a line on the console after which the guest is stuck
STALL_S = 300


def parse_size(text: str) -> int:
    """Bytes of a size such as 256M (K, M, G suffixes as the guest's)"""
    m = re.fullmatch(r'(\d+)([KMG]?)', text.strip().upper())
    if not m:
        raise ConfigError(f'not a size: {text}')
    return int(m[1]) << {'': 0, 'K': 10, 'M': 20, 'G': 30}[m[2]]


@dataclass
class Config:
    """
    The settings of one run; from_env() reads the environment variables
    of the module's documentation, with the same names in lower case.
    """
    # pylint: disable=too-many-instance-attributes
    backend: str = 'uring'
    sqpoll: bool = False
    sqpoll_idle: Optional[int] = None
    fixed_buffers: Optional[str] = None
    queue_depth: Optional[int] = None
    controller: str = 'virtio'
    num_iothreads: Optional[int] = None
    num_queues: Optional[int] = None
    accel: str = 'tcg'
    machine: str = 'q35'
    guest_mem: str = '1G'
    guest_cpus: int = 2
    disk: Optional[str] = None
    disk_size: str = '256M'
    fio_size: Optional[str] = None
    fio_engine: str = 'io_uring'
    timeout: int = 900
    guest_bench: int = 0
    guest_tests: bool = True
    vhost_user: bool = False
    compare: bool = False
    migrate: bool = False
    enospc: bool = False
    eio: bool = False
    memlock_user: bool = False
    nobody: bool = False

    @classmethod
    def from_env(cls, env: Dict[str, str], vhost_user: bool = False
                 ) -> 'Config':
        """The settings from environment variables"""
        def text(name: str, choices: Sequence[str] = ()) -> Optional[str]:
            value = env.get(name) or None
            if value is not None and choices and value not in choices:
                raise ConfigError(f"{name} must be {' or '.join(choices)}")
            return value

        def number(name: str) -> Optional[int]:
            value = text(name)
            if value is not None and not value.isdigit():
                raise ConfigError(f'{name} must be a number')
            return None if value is None else int(value)

        def flag(name: str) -> bool:
            return text(name, ('0', '1')) == '1'

        cfg = cls(vhost_user=vhost_user or flag('VHOST_USER'))
        cfg.backend = text('BACKEND', ('uring', 'io_uring', 'native',
                                       'threads')) or cfg.backend
        cfg.sqpoll = text('SQPOLL', ('on', 'off')) == 'on'
        cfg.sqpoll_idle = number('SQPOLL_IDLE')
        cfg.fixed_buffers = text('FIXED_BUFFERS', ('on', 'off', 'auto'))
        cfg.queue_depth = number('QUEUE_DEPTH')
        cfg.controller = text('CONTROLLER', tuple(DISK_NAMES)) or 'virtio'
        cfg.num_iothreads = number('NUM_IOTHREADS')
        cfg.num_queues = number('NUM_QUEUES')
        cfg.accel = text('ACCEL', ('tcg', 'kvm')) or cfg.accel
        cfg.machine = text('MACHINE', ('q35', 'pc')) or cfg.machine
        cfg.guest_mem = text('GUEST_MEM') or cfg.guest_mem
        cfg.guest_cpus = number('GUEST_CPUS') or cfg.guest_cpus
        cfg.disk = text('DISK')
        cfg.disk_size = text('DISK_SIZE') or cfg.disk_size
        cfg.fio_size = text('FIO_SIZE')
        cfg.fio_engine = text('FIO_ENGINE', ('io_uring', 'libaio')) or \
            cfg.fio_engine
        cfg.timeout = number('TIMEOUT') or cfg.timeout
        cfg.guest_bench = number('GUEST_BENCH') or 0
        cfg.guest_tests = text('GUEST_TESTS', ('0', '1')) != '0'
        cfg.compare = flag('COMPARE')
        cfg.migrate = flag('MIGRATE')
        cfg.enospc = flag('ENOSPC')
        cfg.eio = flag('EIO')
        cfg.memlock_user = flag('MEMLOCK_USER')
        cfg.nobody = flag('NOBODY')
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse combinations that make run does not support"""
        # pylint: disable=too-many-branches
        uring_only = {'SQPOLL_IDLE': self.sqpoll_idle,
                      'FIXED_BUFFERS': self.fixed_buffers,
                      'QUEUE_DEPTH': self.queue_depth,
                      'SQPOLL': self.sqpoll or None,
                      'COMPARE': self.compare or None}
        for name, value in uring_only.items():
            if self.backend != 'uring' and value is not None:
                raise ConfigError(f'{name} applies to BACKEND=uring only')
        if self.num_queues == 0:
            raise ConfigError('NUM_QUEUES must be at least 1')
        if self.controller not in VIRTIO_CONTROLLERS:
            if self.num_iothreads:
                raise ConfigError(f'{self.controller} has no IOThreads: '
                                  'NUM_IOTHREADS=0')
            if self.num_queues is not None:
                raise ConfigError('NUM_QUEUES is for CONTROLLER=virtio '
                                  'and virtio-scsi')
        if self.vhost_user and self.controller != 'virtio':
            raise ConfigError('--vhost-user is for CONTROLLER=virtio')
        modes = [name for name, on in (('MIGRATE', self.migrate),
                                       ('ENOSPC', self.enospc),
                                       ('EIO', self.eio),
                                       ('MEMLOCK_USER', self.memlock_user),
                                       ('NOBODY', self.nobody),
                                       ('COMPARE', self.compare)) if on]
        if len(modes) > 1:
            raise ConfigError(f"one mode at a time: {' '.join(modes)}")
        if self.vhost_user and (modes or self.iothreads > 1):
            raise ConfigError('--vhost-user runs without modes, in at most '
                              'one IOThread (NUM_IOTHREADS <= 1)')
        if (self.enospc or self.eio) and self.disk:
            raise ConfigError('ENOSPC and EIO place the image themselves: '
                              'no DISK')
        if (self.enospc or self.eio) and self.controller != 'virtio':
            raise ConfigError('ENOSPC and EIO use CONTROLLER=virtio')
        sz = parse_size(self.region_size)
        if 4 * sz > parse_size(self.disk_size):
            raise ConfigError(f'DISK_SIZE is too small for 4 x {sz} bytes')

    @property
    def iothreads(self) -> int:
        """IOThreads of the disk: none for AHCI and NVMe"""
        if self.num_iothreads is not None:
            return self.num_iothreads
        return 1 if self.controller in VIRTIO_CONTROLLERS else 0

    @property
    def queues(self) -> int:
        """virtqueues of a virtio disk"""
        return self.num_queues or self.guest_cpus

    @property
    def region_size(self) -> str:
        """FIO_SIZE, larger with MIGRATE so that it has time to finish
        while the first write job runs"""
        return self.fio_size or ('32M' if self.migrate else '16M')

    @property
    def mode(self) -> str:
        """The mode's name in logs and summaries"""
        for name in ('migrate', 'enospc', 'eio', 'memlock_user', 'nobody'):
            if getattr(self, name):
                return name.replace('_user', '')
        if self.vhost_user:
            return 'vhost-user'
        return self.controller

    def backend_label(self) -> str:
        """BACKEND and the settings that go with it"""
        label = f'BACKEND={self.backend}'
        if self.backend == 'uring':
            label += f" SQPOLL={'on' if self.sqpoll else 'off'}"
            for name in ('sqpoll_idle', 'fixed_buffers', 'queue_depth'):
                if getattr(self, name) is not None:
                    label += f' {name.upper()}={getattr(self, name)}'
        return label

    def expected_buffers(self) -> Tuple[str, ...]:
        """The values of the uring node's 'buffers' statistic at the end
        of a run that went as it should"""
        if self.fixed_buffers == 'off':
            return ('off',)
        if self.controller == 'ahci':
            # IDE registers no guest RAM (BlockRAMRegistrar): it bounces
            return ('none',)
        if self.memlock_user or self.nobody:
            return ('bounce', 'partial')
        return ('fixed',)


# The disk's protocol node and its statistics, also used by bench.py's
# vhost-user benchmark


def file_node(cfg: Config, filename: Path) -> Dict[str, Any]:
    """The protocol node disk0-file of @filename for cfg.backend"""
    node: Dict[str, Any] = {
        'node-name': 'disk0-file', 'filename': str(filename),
        'cache': {'direct': True}, 'discard': 'unmap'}
    if cfg.backend != 'uring':
        return {'driver': 'file', 'aio': cfg.backend, **node}
    node.update(driver='uring', sqpoll=cfg.sqpoll)
    for key in ('sqpoll_idle', 'fixed_buffers', 'queue_depth'):
        value = getattr(cfg, key)
        if value is not None:
            node[key.replace('_', '-')] = value
    return node


def node_stats(cmd: Callable[..., Any], save: Optional[Path] = None
               ) -> Tuple[Dict[str, Any], Dict[str, Any], str]:
    """
    query-blockstats of disk0-file: its driver-specific data, and the
    I/O accounting of the BlockBackend above it (the device's), or
    of the node itself when no listed backend uses it (exports have
    anonymous backends, which query-blockstats does not list).
    """
    nodes = cmd('query-blockstats', query_nodes=True)
    backends = cmd('query-blockstats')
    if save:
        save.write_text(json.dumps({'nodes': nodes,
                                    'backends': backends}, indent=2))
    entry = next((e for e in nodes
                  if e.get('node-name') == 'disk0-file'), None)
    if entry is None:
        raise GuestError('disk0-file is not in query-blockstats')
    for b in backends:
        p = b
        while p is not None:
            if p.get('node-name') == 'disk0-file':
                return entry.get('driver-specific', {}), b['stats'], \
                    'backend'
            p = p.get('parent')
    return entry.get('driver-specific', {}), entry['stats'], 'node'


@dataclass
class RunResult:
    """What a run found: the verdict, fio's results, the statistics"""
    name: str
    cfg: Config
    failures: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    fio: Dict[str, Dict[str, str]] = field(default_factory=dict)
    stats: Dict[str, Any] = field(default_factory=dict)
    io_stats: Dict[str, Any] = field(default_factory=dict)
    bench: Optional[Dict[str, Any]] = None
    notes: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No check failed"""
        return not self.failures

    def latency(self, job: str) -> Optional[float]:
        """Mean latency of @job in us: reads for read jobs, else writes"""
        r = self.fio.get(job)
        if not r:
            return None
        kind = 'read' if job.startswith('read') else 'write'
        value = float(r.get(f'{kind}_lat_us', 0))
        return value or None


# Host CPU time of QEMU's threads, by kind, around the guest's benchmark

HZ = os.sysconf('SC_CLK_TCK')


def thread_ticks(pids: Sequence[int]) -> Dict[str, Tuple[str, int]]:
    """CPU ticks (user + system) and name of every thread of @pids"""
    threads = {}
    for pid in pids:
        for tid in os.listdir(f'/proc/{pid}/task'):
            try:
                with open(f'/proc/{pid}/task/{tid}/stat',
                          encoding='utf-8') as f:
                    stat = f.read()
            except OSError:
                continue
            # comm may contain spaces: it is the text between ( and )
            comm = stat[stat.index('(') + 1:stat.rindex(')')]
            fields = stat[stat.rindex(')') + 2:].split()
            threads[f'{pid}/{tid}'] = (comm, int(fields[11]) + int(fields[12]))
    return threads


def thread_kind(comm: str) -> str:
    """vcpu, iothread, main, sq-thread, io-wq or other"""
    if re.match(r'CPU \d+/', comm):
        return 'vcpu'
    if comm.startswith('IO '):
        return 'iothread'
    if comm.startswith('iou-sqp'):
        return 'sq-thread'
    if comm.startswith('iou-wrk'):
        return 'io-wq'
    if comm.startswith(('qemu-system', 'qemu-storage')):
        return 'main'
    return 'other'


def bench_report(before: Dict[str, Tuple[str, int]],
                 after: Dict[str, Tuple[str, int]],
                 fio: Dict[str, Dict[str, str]], secs: int) -> Dict[str, Any]:
    """Host CPU per I/O by kind of thread over the guest's bench jobs"""
    cpu: Dict[str, float] = {}
    for tid, (comm, ticks) in after.items():
        kind = thread_kind(comm)
        used = ticks - before.get(tid, (comm, 0))[1]
        cpu[kind] = cpu.get(kind, 0) + used / HZ
    jobs = {}
    for name, r in fio.items():
        if name.startswith('bench-'):
            rd = int(r['read_iops'])
            jobs[name] = {
                'iops': rd + int(r['write_iops']),
                'lat_us': float(r['read_lat_us'] if rd else
                                r['write_lat_us'])}
    ios = sum(j['iops'] for j in jobs.values()) * secs
    per_io = {k: v / ios * 1e6 for k, v in cpu.items()} if ios else {}
    return {'jobs': jobs, 'cpu_s': cpu, 'ios': ios, 'cpu_us_per_io': per_io,
            'cpu_us_per_io_total': sum(per_io.values())}


class ConsoleRecorder(logging.Handler):
    """
    The console lines that qemu_test's helpers read, which they log to
    the 'console' logger: kept, written to the console log, the guest's
    markers echoed, and callbacks run on markers.  A stop marker ends
    the current wait early, by raising GuestError out of the helper
    (the helpers' own failure_message would close the console).
    """

    def __init__(self, path: Path, out: TextIO):
        super().__init__(logging.DEBUG)
        self.lines: List[str] = []
        self.out = out
        self.stop_markers: Sequence[str] = ()
        self.on_marker: Dict[str, Callable[[], None]] = {}
        self.last_line = time.monotonic()
        # pylint: disable=consider-using-with
        self._file = open(path, 'w', encoding='utf-8', errors='replace')

    def emit(self, record: logging.LogRecord) -> None:
        self.add(record.getMessage())

    def add(self, line: str) -> None:
        """One line read from the console"""
        line = line.strip()
        if not line:
            return
        self.lines.append(line)
        self.last_line = time.monotonic()
        self._file.write(line + '\n')
        self._file.flush()
        if not MARKER.match(line):
            return
        if not line.startswith(('FIO-ERROR', 'FIO-START')):
            print(f'   {line}', file=self.out, flush=True)
        for marker, callback in self.on_marker.items():
            if line.startswith(marker):
                callback()
        if line in self.stop_markers:
            raise GuestError(f'the guest printed {line}')

    def markers(self, prefix: str) -> List[str]:
        """The lines that start with @prefix"""
        return [line for line in self.lines if line.startswith(prefix)]

    def close(self) -> None:
        self._file.close()
        super().close()


class _HelperTest:
    """What qemu_test's console helpers use of a test: log and fail()"""

    def __init__(self, vm: QEMUMachine):
        self.vm = vm
        self.log = logging.getLogger('run_guest.helpers')

    def fail(self, msg: str) -> None:
        """Called on EOF of the console"""
        raise GuestError(f'QEMU exited ({msg})')


class Guest:
    """One QEMU process of a run, through QEMUMachine"""

    def __init__(self, run: 'Run', name: str, incoming: Optional[str] = None):
        self.run = run
        self.name = name
        args = run.qemu_args()
        if incoming:
            args += ['-incoming', incoming]
        self.vm = QEMUMachine(str(QEMU), args=args, wrapper=run.wrapper(),
                              name=name, log_dir=str(LOGS))
        self.vm.set_console()   # ttyS0, on a socket pair
        machine = run.cfg.machine
        if run.cfg.vhost_user:
            machine += ',memory-backend=mem'
        self.vm.set_machine(machine)
        self._test = _HelperTest(self.vm)
        self.exit_failure: Optional[str] = None

    @property
    def log_path(self) -> Path:
        """QEMU's stdout and stderr"""
        return LOGS / f'{self.name}.log'

    def launch(self) -> None:
        """Start QEMU and connect to its QMP monitor"""
        self.vm.launch()

    def credentials(self) -> Tuple[int, int, int]:
        """QEMU's user id, effective capabilities and RLIMIT_MEMLOCK"""
        pid = self.vm.get_pid()
        status = Path(f'/proc/{pid}/status').read_text()
        uid = int(re.search(r'^Uid:\s+(\d+)', status, re.M)[1])
        caps = int(re.search(r'^CapEff:\s+(\w+)', status, re.M)[1], 16)
        limits = Path(f'/proc/{pid}/limits').read_text()
        memlock = re.search(r'^Max locked memory\s+(\d+)', limits, re.M)
        return uid, caps, int(memlock[1]) if memlock else -1

    def cmd(self, command: str, **args: Any) -> Any:
        """A QMP command; errors raise ExecuteError"""
        return self.vm.cmd(command, **args)

    def wait_for(self, text: str, idle: Callable[['Guest'], None],
                 poll_s: float = 2.0) -> None:
        """
        Read the console until @text, calling @idle whenever it has
        been quiet for @poll_s seconds (a stopped VM is quiet).  Raises
        GuestError on a stop marker, when QEMU exits, when the guest
        printed nothing for STALL_S seconds (no fio job takes that long)
        or at the run's deadline.
        """
        sock = self.vm.console_socket
        while True:
            left = self.run.deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f'the guest did not finish within '
                                 f'{self.run.cfg.timeout} s (TIMEOUT)')
            sock.settimeout(min(poll_s, left))
            try:
                wait_for_console_pattern(self._test, text, vm=self.vm)
                return
            except socket.timeout:
                if not self.vm.is_running():
                    raise GuestError('QEMU exited') from None
                idle(self)
                silent = time.monotonic() - self.run.console.last_line
                if silent > STALL_S:
                    raise GuestError(f'the guest printed nothing for '
                                     f'{silent:.0f} s: stuck') from None

    def send_line(self, text: str) -> None:
        """Type a line on the console (CR, as a terminal sends it)"""
        exec_command(self._test, text, vm=self.vm)

    def drain_console(self, quiet_s: float = 1.0) -> None:
        """What the console still holds, until it is quiet for
        @quiet_s seconds, into the recorder"""
        sock = self.vm.console_socket
        sock.settimeout(quiet_s)
        data = b''
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except (socket.timeout, OSError):
            pass
        for line in data.decode(errors='replace').split('\n'):
            self.run.console.add(line)

    def wait_exit(self, timeout_s: int = 30) -> None:
        """
        Wait for QEMU to exit by itself (the guest powered off); kill it
        after @timeout_s, with the stacks of its threads in a log.
        """
        deadline = time.monotonic() + timeout_s
        while self.vm.is_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.vm.is_running():
            self.exit_failure = (f'{self.name}: QEMU did not exit within '
                                 f'{timeout_s} s of the guest\'s poweroff; '
                                 f'killed, stacks in {self.dump_stacks()}')
            self.vm.kill()
            return
        self.vm.wait()
        self.check_exit()

    def quit(self) -> None:
        """Ask QEMU to quit over QMP"""
        pid = self.vm.get_pid()
        try:
            self.vm.shutdown(timeout=30)
        except AbnormalShutdown:
            self.exit_failure = (f'{self.name}: QEMU did not quit within '
                                 f'30 s; killed (pid {pid})')
            return
        self.check_exit()

    def check_exit(self) -> None:
        """Record a non-zero exit status"""
        rc = self.vm.exitcode()
        if rc:
            self.exit_failure = f'{self.name}: QEMU exited with status {rc}'

    def dump_stacks(self) -> str:
        """The stacks of QEMU's threads, by gdb, into a log file"""
        path = LOGS / f'{self.name}.stacks.txt'
        pid = self.vm.get_pid()
        if pid is None or not shutil.which('gdb'):
            return '(no gdb)'
        with open(path, 'w', encoding='utf-8') as f:
            subprocess.run(['gdb', '-p', str(pid), '-batch', '-ex',
                            'thread apply all bt 20'], stdout=f,
                           stderr=subprocess.STDOUT, timeout=120,
                           check=False)
        return str(path)


class StorageDaemon:
    """qemu-storage-daemon with its QMP monitor on a unix socket"""

    def __init__(self, name: str, sock_dir: Path, args: List[str]):
        self.name = name
        self.qmp_path = sock_dir / f'{name}-qmp'
        self.log_path = LOGS / f'{name}.log'
        self.args = [
            str(QSD), '--chardev',
            f'socket,id=mon0,path={self.qmp_path},server=on,wait=off',
            '--monitor', 'chardev=mon0'] + args
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.qmp: Optional[QEMUMonitorProtocol] = None

    def start(self) -> None:
        """Start it, and connect once its monitor listens"""
        with open(self.log_path, 'wb') as log:
            # pylint: disable=consider-using-with
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not self.qmp_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise GuestError(f'{self.name} did not start: '
                                 f'{self.log_path.read_text()[:500]}')
            time.sleep(0.1)
        self.qmp = QEMUMonitorProtocol(str(self.qmp_path))
        self.qmp.connect()

    def cmd(self, command: str, **args: Any) -> Any:
        """A QMP command, with _ in argument names as - (QEMUMachine's
        convention)"""
        assert self.qmp
        return self.qmp.cmd(command, **{k.replace('_', '-'): v
                                        for k, v in args.items()})

    @property
    def pid(self) -> Optional[int]:
        """Its process while it runs"""
        return self.proc.pid if self.proc and self.proc.poll() is None \
            else None

    def stop(self) -> Optional[str]:
        """quit; the failure to record if it did not end cleanly"""
        if not self.proc:
            return None
        if self.proc.poll() is not None:
            return f'{self.name} exited early (status {self.proc.returncode})'
        try:
            self.cmd('quit')
        except (QMPError, OSError, EOFError):
            pass
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return f'{self.name} did not quit; killed'
        finally:
            if self.qmp:
                with contextlib.suppress(Exception):
                    self.qmp.close()
        return f'{self.name} exited with status {rc}' if rc else None


def mounted(path: Path) -> bool:
    """Whether @path is a mount point"""
    with open('/proc/self/mountinfo', encoding='utf-8') as f:
        return any(line.split()[4] == str(path) for line in f)


class NoSpace:
    """
    ENOSPC=1: the image is a sparse file on a tmpfs of a few MiB that
    the guest's first write job fills.  On the stop, the tmpfs grows.
    """
    SMALL = 8 * MiB

    def __init__(self, run: 'Run'):
        self.run = run
        self.mnt = GUEST_DIR / 'enospc'
        self.stops: List[Dict[str, Any]] = []

    def setup(self, stack: contextlib.ExitStack) -> Path:
        """Mount the tmpfs; the image on it"""
        self.mnt.mkdir(exist_ok=True)
        if mounted(self.mnt):     # left by a killed run
            subprocess.run(['umount', str(self.mnt)], check=True)
        subprocess.run(['mount', '-t', 'tmpfs', '-o',
                        f'size={self.SMALL},mode=0755', 'uring-enospc',
                        str(self.mnt)], check=True)
        stack.callback(subprocess.run, ['umount', str(self.mnt)],
                       check=False)
        return self.mnt / 'disk.img'

    def on_stop(self, guest: Guest, event: Dict[str, Any]) -> None:
        """Check the event; make room for the image"""
        data = event['data']
        self.stops.append(data)
        if not data.get('nospace'):
            self.run.fail(f'BLOCK_IO_ERROR without nospace: {data}')
        size = parse_size(self.run.cfg.disk_size) + 16 * MiB
        subprocess.run(['mount', '-o', f'remount,size={size}',
                        str(self.mnt)], check=True)
        self.run.say(f'-- VM stopped: {data["operation"]} failed with '
                     f'nospace={data["nospace"]} ({data.get("reason")}); '
                     f'tmpfs grown to {size // MiB} MiB, cont')
        guest.cmd('cont')

    def check(self) -> None:
        """The guest must have filled the tmpfs once"""
        if not self.stops:
            self.run.fail('the VM never stopped for ENOSPC: the guest '
                          f'did not fill {self.SMALL // MiB} MiB')


class Faults:
    """
    EIO=1: qemu-storage-daemon exports the image over FUSE, and the uring
    node opens the exported file.  In the daemon the export's raw node
    reads the image through blkdebug nodes: first one that fails writes
    at WRITE_FAULT with EIO, then (after the first stop) one that fails
    reads at READ_FAULT, then (after the second stop) none.  blkdebug
    cannot drop its rules, so each fault goes by moving raw's file
    child with blockdev-reopen.
    """
    WRITE_FAULT = 4 * MiB       # in the first write job's region
    READ_FAULT = 12 * MiB       # read back when that job verifies

    def __init__(self, run: 'Run'):
        self.run = run
        self.mnt = GUEST_DIR / 'eio-export'
        self.qsd: Optional[StorageDaemon] = None
        self.stages = ['fault-w', 'fault-r', 'img']
        self.stops: List[Dict[str, Any]] = []

    @staticmethod
    def _blkdebug(name: str, event: str, iotype: str, offset: int) -> str:
        return json.dumps({
            'driver': 'blkdebug', 'node-name': name, 'image': 'img',
            'inject-error': [{'event': event, 'iotype': iotype,
                              'errno': 5, 'sector': offset // 512}]})

    def setup(self, stack: contextlib.ExitStack, image: Path) -> Path:
        """Start the daemon; the file the uring node opens"""
        if mounted(self.mnt):     # left by a killed run
            subprocess.run(['umount', str(self.mnt)], check=True)
        self.mnt.touch()
        self.qsd = StorageDaemon(f'{self.run.name}.qsd-fuse',
                                 self.run.sock_dir, [
            '--blockdev', json.dumps({
                'driver': 'file', 'node-name': 'img',
                'filename': str(image), 'cache': {'direct': True}}),
            '--blockdev', self._blkdebug('fault-w', 'write_aio', 'write',
                                         self.WRITE_FAULT),
            '--blockdev', self._blkdebug('fault-r', 'read_aio', 'read',
                                         self.READ_FAULT),
            '--blockdev', self._raw('fault-w'),
            '--export', f'fuse,id=fuse0,node-name=exp,writable=on,'
                        f'mountpoint={self.mnt}'])
        stack.callback(self._cleanup)
        self.qsd.start()
        return self.mnt

    @staticmethod
    def _raw(file: str) -> str:
        return json.dumps({'driver': 'raw', 'node-name': 'exp',
                           'file': file})

    def _cleanup(self) -> None:
        assert self.qsd
        failure = self.qsd.stop()
        if failure:
            self.run.fail(failure)
        if mounted(self.mnt):
            subprocess.run(['umount', str(self.mnt)], check=False)
        self.mnt.unlink(missing_ok=True)

    def on_stop(self, guest: Guest, event: Dict[str, Any]) -> None:
        """Check the event, remove the fault that caused it, cont"""
        assert self.qsd
        data = event['data']
        self.stops.append(data)
        expected = {'fault-w': 'write', 'fault-r': 'read'}.get(
            self.stages[0])
        if data.get('nospace') or data.get('operation') != expected:
            self.run.fail(f'unexpected BLOCK_IO_ERROR (expected a {expected}'
                          f' error without nospace): {data}')
        if len(self.stages) > 1:
            self.stages.pop(0)
        # The VM stays stopped while the fault is there
        time.sleep(1)
        status = guest.cmd('query-status')['status']
        if status != 'io-error':
            self.run.fail(f'status {status} instead of io-error while '
                          f'the fault is there')
        self.qsd.cmd('blockdev-reopen',
                     options=[json.loads(self._raw(self.stages[0]))])
        self.run.say(f'-- VM stopped: {data["operation"]} failed '
                     f'({data.get("reason")}), status {status}; the '
                     f'daemon\'s raw node now reads {self.stages[0]}, cont')
        guest.cmd('cont')

    def check(self) -> None:
        """One write error, then one read error"""
        ops = [s.get('operation') for s in self.stops]
        if ops != ['write', 'read']:
            self.run.fail(f'expected a stop for a write error, then one '
                          f'for a read error; got {ops or "none"}')


class Migration:
    """
    MIGRATE=1: a second QEMU with -incoming on a unix socket, on the same
    image; migrate when the guest starts its first write job.
    """
    JOB = 'write-qd1'

    def __init__(self, run: 'Run'):
        self.run = run
        self.uri = f'unix:{run.sock_dir}/migrate'
        self.stats: Dict[str, Any] = {}
        self.source_writes: Optional[int] = None
        self.postcopy = ''

    def execute(self, src: Guest) -> None:
        """Start the destination, wait for the job, check that postcopy
        is refused, migrate; the guest then runs in the destination"""
        run = self.run
        dst = Guest(run, f'{run.name}.qemu-dst', incoming=self.uri)
        run.others.append(dst)
        dst.launch()
        # The guest ends early (GUEST-ERROR) with READY-FOR-STATS
        run.console.stop_markers = ('READY-FOR-STATS',)
        try:
            src.wait_for(f'FIO-START job={self.JOB}', run.idle)
        except GuestError:
            if not run.console.markers('READY-FOR-STATS'):
                raise
            run.fail('the guest finished before the migration')
            return
        finally:
            run.console.stop_markers = ()
        self.check_postcopy_refused(src)
        self.migrate(src, dst)
        src.quit()
        run.others = [src]
        run.guest = dst

    def check_postcopy_refused(self, src: Guest) -> None:
        """postcopy-ram must be refused while guest RAM is pinned"""
        buffers = '?'
        for _ in range(60):     # pinning runs in a worker thread
            buffers = self.run.node_stats(src.cmd)[0].get('buffers', '?')
            if buffers != 'pinning':
                break
            time.sleep(1)
        if buffers != 'fixed':
            self.postcopy = f'not checked: guest RAM is not pinned ' \
                f'(buffers={buffers})'
            return
        cap = [{'capability': 'postcopy-ram', 'state': True}]
        try:
            src.cmd('migrate-set-capabilities', capabilities=cap)
        except ExecuteError as err:
            self.postcopy = f'PASS, refused with buffers={buffers}: {err}'
            return
        cap[0]['state'] = False
        src.cmd('migrate-set-capabilities', capabilities=cap)
        tree = QEMU_TREE / 'migration' / 'options.c'
        if 'migrate_pinned_ram_check' not in tree.read_text():
            self.postcopy = ('SKIP: postcopy-ram accepted; this QEMU tree '
                             'has no refusal for pinned RAM yet')
            self.run.result.skipped.append(self.postcopy)
        else:
            self.postcopy = f'FAIL: accepted with buffers={buffers}'
            self.run.fail('postcopy-ram accepted although guest RAM is '
                          f'pinned (buffers={buffers})')

    def migrate(self, src: Guest, dst: Guest) -> None:
        """Precopy migration of the running guest from @src to @dst, once
        it did a quarter of the job's writes"""
        job_writes = parse_size(self.run.cfg.region_size) // 4096
        deadline = time.monotonic() + 120
        while True:
            writes = self.run.node_stats(src.cmd)[1]['wr_operations']
            if writes >= job_writes // 4:
                break
            if time.monotonic() > deadline:
                raise GuestError(f'{self.JOB} did only {writes} writes in '
                                 '120 s')
            time.sleep(0.2)
        src.cmd('migrate-set-parameters', max_bandwidth=4 << 30)
        self.run.say(f'-- migrating to {self.uri} after {writes} of the '
                     f'{job_writes} writes of {self.JOB}')
        src.cmd('migrate', uri=self.uri)
        deadline = time.monotonic() + 300
        while True:
            info = src.cmd('query-migrate')
            if info.get('status') in ('completed', 'failed', 'cancelled'):
                break
            if time.monotonic() > deadline:
                raise GuestError(f'migration did not finish: {info}')
            time.sleep(0.2)
        self.stats = info
        if info['status'] != 'completed':
            raise GuestError(f'migration {info["status"]}: '
                             f'{info.get("error-desc", "")}')
        # Writes that the source did, against what the job writes
        self.source_writes = self.run.node_stats(src.cmd)[1].get(
            'wr_operations')
        if not self.source_writes or self.source_writes >= job_writes:
            self.run.fail(f'migration did not end during the write phase '
                          f'of {self.JOB}: the source did '
                          f'{self.source_writes} of its {job_writes} '
                          'writes (FIO_SIZE?)')
        for _ in range(100):
            if dst.cmd('query-status')['status'] == 'running':
                break
            time.sleep(0.1)
        else:
            raise GuestError('the destination does not run after migration')
        src.drain_console()
        ram = info.get('ram', {})
        self.run.say(
            f"-- migrated in {info.get('total-time')} ms (downtime "
            f"{info.get('downtime')} ms, setup {info.get('setup-time')} ms),"
            f" {ram.get('transferred', 0) // MiB} MiB sent at "
            f"{ram.get('mbps', 0):.0f} Mbps, "
            f"{ram.get('dirty-sync-count')} dirty syncs; the source did "
            f"{self.source_writes} of the job's {job_writes} writes")


class Run:
    """One boot of the guest, with the mode's work around it"""
    # pylint: disable=too-many-instance-attributes

    def __init__(self, cfg: Config, out: TextIO = sys.stdout):
        self.cfg = cfg
        self.out = out
        stamp = time.strftime('%Y%m%d-%H%M%S')
        self.name = f'{stamp}-{cfg.mode}-{cfg.backend}'
        if cfg.sqpoll:
            self.name += '-sqpoll'
        self.result = RunResult(self.name, cfg)
        LOGS.mkdir(parents=True, exist_ok=True)
        self.console = ConsoleRecorder(LOGS / f'{self.name}.console.log',
                                       out)
        self.sock_dir = Path(tempfile.mkdtemp(prefix='run-guest.'))
        self.image = Path(cfg.disk or GUEST_DIR / 'disk.img')
        self.disk_path = self.image
        self.guest: Optional[Guest] = None
        self.others: List[Guest] = []     # the migration's source
        self.qsd: Optional[StorageDaemon] = None
        self.deadline = 0.0
        self.times: Dict[str, float] = {}
        self.nospace = NoSpace(self) if cfg.enospc else None
        self.faults = Faults(self) if cfg.eio else None
        self.migration = Migration(self) if cfg.migrate else None
        self.bench_samples: Dict[str, Dict[str, Tuple[str, int]]] = {}

    def say(self, text: str) -> None:
        """A line of progress"""
        print(text, file=self.out, flush=True)

    def fail(self, text: str) -> None:
        """Record a failed check"""
        self.result.failures.append(text)
        self.say(f'FAIL: {text}')

    # The QEMU command line

    def file_node(self, filename: Path) -> Dict[str, Any]:
        """The protocol node of the image"""
        return file_node(self.cfg, filename)

    def qemu_args(self) -> List[str]:
        """Everything but what QEMUMachine adds (QMP, console, machine)"""
        cfg = self.cfg
        append = ' '.join([
            'console=ttyS0 loglevel=4 panic=-1',
            f'guest.size={cfg.region_size} guest.engine={cfg.fio_engine}',
            f'guest.seed={random.randint(1, 32767)} guest.wait=120',
            f'guest.bench={cfg.guest_bench} '
            f'guest.tests={int(cfg.guest_tests)}',
            f'guest.controller={cfg.controller} '
            f'guest.disk={DISK_NAMES[cfg.controller]}'])
        args = [
            '-accel', cfg.accel, '-m', cfg.guest_mem,
            '-smp', str(cfg.guest_cpus), '-nodefaults', '-no-reboot',
            # Thread names (CPU 0/TCG, IO iot0) for the CPU split
            '-name', 'uring-guest,debug-threads=on',
            '-kernel', str(GUEST_DIR / 'vmlinuz'),
            '-initrd', str(GUEST_DIR / 'initramfs.cpio'),
            '-append', append]
        if cfg.accel == 'kvm':
            args += ['-cpu', 'host']
        if cfg.vhost_user:
            return args + [
                '-object', f'memory-backend-memfd,id=mem,'
                           f'size={cfg.guest_mem},share=on',
                '-chardev', f'socket,id=vu0,path={self.sock_dir}/vhost-user',
                '-device', f'vhost-user-blk-pci,id=vblk0,chardev=vu0,'
                           f'num-queues={cfg.queues}']
        for i in range(cfg.iothreads):
            args += ['-object', f'iothread,id=iot{i}']
        args += ['-blockdev', json.dumps(self.file_node(self.disk_path)),
                 '-blockdev', 'driver=raw,node-name=disk0,file=disk0-file,'
                              'discard=unmap']
        return args + self.device_args()

    def device_args(self) -> List[str]:
        """The guest's disk controller"""
        cfg = self.cfg
        errors = {}
        if cfg.enospc or cfg.eio:
            errors = {'werror': 'stop', 'rerror': 'stop'}
        if cfg.controller == 'ahci':
            return ['-device', 'ich9-ahci,id=ahci0', '-device', json.dumps(
                {'driver': 'ide-hd', 'id': 'disk0-dev', 'bus': 'ahci0.0',
                 'drive': 'disk0', **errors})]
        if cfg.controller == 'nvme':
            return ['-device', 'nvme,id=nvme0,serial=uring0,drive=disk0']
        if cfg.controller == 'virtio-scsi':
            dev: Dict[str, Any] = {
                'driver': 'virtio-scsi-pci', 'id': 'scsi0',
                'num_queues': cfg.queues}
            disk = ['-device', json.dumps(
                {'driver': 'scsi-hd', 'id': 'disk0-dev', 'bus': 'scsi0.0',
                 'drive': 'disk0', **errors})]
        else:
            dev = {'driver': 'virtio-blk-pci', 'id': 'vblk0',
                   'drive': 'disk0', 'num-queues': cfg.queues, **errors}
            disk = []
        if cfg.iothreads == 1:
            dev['iothread'] = 'iot0'
        elif cfg.iothreads > 1:
            dev['iothread-vq-mapping'] = [{'iothread': f'iot{i}'}
                                          for i in range(cfg.iothreads)]
        return ['-device', json.dumps(dev)] + disk

    def wrapper(self) -> List[str]:
        """What QEMU runs under: without CAP_IPC_LOCK and with 8 MiB of
        RLIMIT_MEMLOCK, as root or as nobody"""
        limit = ['prlimit', f'--memlock={8 * MiB}:{8 * MiB}']
        if self.cfg.memlock_user:
            return limit + ['setpriv', '--bounding-set=-ipc_lock',
                            '--inh-caps=-ipc_lock']
        if self.cfg.nobody:
            return limit + ['setpriv', '--reuid=nobody', '--regid=nogroup',
                            '--clear-groups', '--inh-caps=-all',
                            '--bounding-set=-all', '--no-new-privs']
        return []

    # Statistics

    @staticmethod
    def node_stats(cmd: Callable[..., Any], save: Optional[Path] = None
                   ) -> Tuple[Dict[str, Any], Dict[str, Any], str]:
        """See the module function node_stats()"""
        return node_stats(cmd, save)

    # The run

    def execute(self) -> RunResult:
        """Boot, drive and check the guest; the result"""
        logger = logging.getLogger('console')
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(self.console)
        with open(GUEST_DIR / 'disk.img.lock', 'w', encoding='utf-8') as lk, \
                contextlib.ExitStack() as stack:
            fcntl.flock(lk, fcntl.LOCK_EX)     # one run at a time
            stack.callback(logger.removeHandler, self.console)
            stack.callback(self.console.close)
            stack.callback(shutil.rmtree, self.sock_dir, True)
            try:
                self._execute(stack)
            except GuestError as err:
                self.fail(str(err))
                self.diagnose()
            except (QMPError, OSError, subprocess.SubprocessError) as err:
                # QEMU or a helper went away, or a host command failed
                traceback.print_exc(file=self.out)
                self.fail(f'{type(err).__name__}: {err}')
        self.check()
        self.report()
        return self.result

    def _prepare_image(self, stack: contextlib.ExitStack) -> None:
        """The image, on its tmpfs or behind its FUSE export; the path
        that QEMU's node opens is self.disk_path"""
        if self.nospace:
            self.image = self.nospace.setup(stack)
        if self.image.exists():
            self.image.unlink()
        with open(self.image, 'wb') as f:
            f.truncate(parse_size(self.cfg.disk_size))
        self.disk_path = self.image
        if self.faults:
            self.disk_path = self.faults.setup(stack, self.image)
        if self.cfg.nobody:
            os.chown(self.image, pwd.getpwnam('nobody').pw_uid,
                     grp.getgrnam('nogroup').gr_gid)

    def _start_vhost_user(self) -> None:
        cfg = self.cfg
        export = (f'type=vhost-user-blk,id=exp0,node-name=disk0,'
                  f'writable=on,addr.type=unix,'
                  f'addr.path={self.sock_dir}/vhost-user,'
                  f'num-queues={cfg.queues}')
        args = ['--blockdev', json.dumps(self.file_node(self.image)),
                '--blockdev', 'driver=raw,node-name=disk0,file=disk0-file,'
                              'discard=unmap']
        if cfg.iothreads == 1:
            args += ['--object', 'iothread,id=iot0']
            export += ',iothread=iot0'
        self.qsd = StorageDaemon(f'{self.name}.qsd', self.sock_dir,
                                 args + ['--export', export])
        self.say('== starting qemu-storage-daemon')
        self.qsd.start()

    def _execute(self, stack: contextlib.ExitStack) -> None:
        # pylint: disable=too-many-branches,too-many-statements
        cfg = self.cfg
        self.times['start'] = time.monotonic()
        self._prepare_image(stack)
        if cfg.vhost_user:
            self._start_vhost_user()
            stack.callback(self._stop_qsd)
        if cfg.guest_bench:
            self.console.on_marker = {
                m: (lambda m=m: self._sample(m))
                for m in ('BENCH-BEGIN', 'BENCH-END')}

        self.guest = src = Guest(self, f'{self.name}.qemu')
        self.say(f'== booting the guest ({cfg.mode}, {cfg.backend_label()} '
                 f'iothreads={cfg.iothreads} queues={cfg.queues}, '
                 f'{cfg.accel}); console: {self.console_path}')
        self.times['boot'] = time.monotonic()
        self.deadline = self.times['boot'] + cfg.timeout
        try:
            src.launch()
        except Exception as err:
            raise GuestError(f'QEMU did not start: {err}; '
                             f'{src.log_path}') from err
        stack.callback(self._kill_leftovers)
        if cfg.memlock_user or cfg.nobody:
            self._check_credentials(src)

        if self.migration:
            self.migration.execute(src)
        if not self.console.markers('READY-FOR-STATS'):
            self.guest.wait_for('READY-FOR-STATS', self.idle)
        self.times['ready'] = time.monotonic()

        # The statistics of the protocol node while the guest is idle
        stats_cmd = self.qsd.cmd if self.qsd else self.guest.cmd
        try:
            spec, io_stats, source = self.node_stats(
                stats_cmd, LOGS / f'{self.name}.stats.json')
            self.result.stats = spec
            self.result.io_stats = dict(io_stats, source=source)
        except (QMPError, GuestError) as err:
            self.fail(f'query-blockstats: {err}')

        # Let the guest power off; QEMU exits by itself then
        self.guest.send_line('go')
        with contextlib.suppress(GuestError):
            self.guest.wait_for('GUEST-POWEROFF', lambda g: None)
        self.guest.wait_exit()
        self.times['end'] = time.monotonic()

    def diagnose(self) -> None:
        """
        The guest is stuck or late: what QEMU's run state, the node's
        statistics and (virtio) the device's virtqueues say, and the
        stacks of QEMU's threads, in a log
        """
        guest = self.guest
        if guest is None or not guest.vm.is_running():
            return
        diag: Dict[str, Any] = {}
        queries: List[Tuple[str, str, Dict[str, Any]]] = [
            ('status', 'query-status', {}),
            ('blockstats', 'query-blockstats', {'query-nodes': True})]
        if self.cfg.controller == 'virtio' and not self.cfg.vhost_user:
            queries += [(f'virtqueue{q}', 'x-query-virtio-queue-status',
                         {'path': '/machine/peripheral/vblk0/virtio-backend',
                          'queue': q}) for q in range(self.cfg.queues)]
        for key, command, args in queries:
            try:
                diag[key] = guest.vm.cmd(command, args_dict=args)
            except (QMPError, OSError) as err:
                diag[key] = f'{type(err).__name__}: {err}'
        path = LOGS / f'{guest.name}.diag.json'
        path.write_text(json.dumps(diag, indent=1))
        status = diag['status']
        text = f'-- {guest.name}: {status}'
        if isinstance(status, dict):
            text = f"-- {guest.name}: status {status['status']}"
        inuse = [diag[k].get('inuse') for k in diag
                 if k.startswith('virtqueue') and isinstance(diag[k], dict)]
        if inuse:
            text += f', requests in the virtqueues: {inuse}'
        self.say(f'{text}; {path}, stacks in {guest.dump_stacks()}')

    def _check_credentials(self, guest: Guest) -> None:
        """QEMU must run without CAP_IPC_LOCK, with 8 MiB of
        RLIMIT_MEMLOCK, and as nobody with NOBODY=1"""
        uid, caps, memlock = guest.credentials()
        self.result.notes.append(f'QEMU ran as uid {uid}, CapEff '
                                 f'{caps:#x}, RLIMIT_MEMLOCK {memlock}')
        cap_ipc_lock = 1 << 14
        if caps & cap_ipc_lock or memlock != 8 * MiB:
            self.fail(f'QEMU has CAP_IPC_LOCK or RLIMIT_MEMLOCK {memlock}')
        if self.cfg.nobody and uid != pwd.getpwnam('nobody').pw_uid:
            self.fail(f'QEMU runs as uid {uid}, not as nobody')

    def _kill_leftovers(self) -> None:
        """QEMU processes that a failure left running; exit failures"""
        for g in [self.guest] + self.others:
            if g is None:
                continue
            if g.vm.is_running():
                g.vm.kill()
            if g.exit_failure and g.exit_failure not in self.result.failures:
                self.fail(g.exit_failure)

    def _stop_qsd(self) -> None:
        assert self.qsd
        failure = self.qsd.stop()
        if failure:
            self.fail(failure)

    def _sample(self, marker: str) -> None:
        pids = [p for p in (self.guest.vm.get_pid() if self.guest else None,
                            self.qsd.pid if self.qsd else None) if p]
        self.bench_samples[marker] = thread_ticks(pids)

    def idle(self, guest: Guest) -> None:
        """The console is quiet: has the VM stopped for an I/O error?"""
        if self.qsd and self.qsd.pid is None:
            raise GuestError('qemu-storage-daemon exited while the guest ran')
        handler = self.nospace or self.faults
        if handler is None:
            return
        if guest.cmd('query-status')['status'] != 'io-error':
            return
        for event in guest.vm.get_qmp_events():
            if event['event'] == 'BLOCK_IO_ERROR':
                handler.on_stop(guest, event)
                return
        self.fail('the VM is in io-error without a BLOCK_IO_ERROR event')
        guest.cmd('cont')

    @property
    def console_path(self) -> Path:
        """The console log"""
        return LOGS / f'{self.name}.console.log'

    # Checks and the summary

    def check(self) -> None:
        """The verdict on what the guest and the statistics say"""
        # pylint: disable=too-many-branches
        cfg = self.cfg
        res = self.result
        for line in self.console.markers('FIO-RESULT'):
            kv = dict(w.split('=', 1) for w in line.split()[1:] if '=' in w)
            res.fio[kv.get('job', '?')] = kv
        done = self.console.markers('GUEST-DONE')
        if not done:
            if self.console.markers('READY-FOR-STATS'):
                self.fail('the guest did not complete its tests')
        elif not (self.console.markers('VERIFY-OK') or
                  (not cfg.guest_tests and
                   self.console.markers('VERIFY-SKIPPED'))):
            self.fail('fio or its verification failed in the guest: ' +
                      ' '.join(self.console.markers('VERIFY-FAIL')))
        for handler in (self.nospace, self.faults):
            if handler:
                handler.check()
        self._check_logs()
        if cfg.guest_bench:
            self._check_bench()
        st = res.stats
        if not st or done != ['GUEST-DONE failed=0']:
            return
        if cfg.guest_tests and not st.get('discard-nb-ok'):
            self.fail(f"no discard reached the image "
                      f"(discard-nb-ok={st.get('discard-nb-ok')})")
        if cfg.backend != 'uring':
            return
        if st.get('driver') != 'uring':
            self.fail(f"statistics are not uring's: {st.get('driver')}")
            return
        want_rings = cfg.iothreads if cfg.iothreads > 1 and \
            not cfg.vhost_user else 1
        if st['rings'] < want_rings:
            self.fail(f"rings={st['rings']}, expected at least {want_rings}")
        if bool(st['sqpoll-rings']) != cfg.sqpoll:
            self.fail(f"sqpoll-rings={st['sqpoll-rings']} with SQPOLL="
                      f"{'on' if cfg.sqpoll else 'off'}")
        if cfg.guest_tests and not st['flushes']:
            self.fail('flushes=0: the flush pass did not reach the driver')
        want = cfg.expected_buffers()
        if st['buffers'] not in want:
            self.fail(f"buffers={st['buffers']}, expected "
                      f"{' or '.join(want)}")
        elif st['buffers'] == 'fixed' and not st['fixed-requests']:
            self.fail('fixed-requests=0: no request used a fixed buffer '
                      f"(bounced-requests={st['bounced-requests']})")
        elif st['buffers'] == 'fixed' and cfg.vhost_user and \
                st['bounced-requests'] > VHOST_USER_MAX_BOUNCED:
            # The daemon does no I/O of its own: all of it is the guest's
            self.fail(f"bounced-requests={st['bounced-requests']}: guest "
                      'I/O through the export did not use fixed buffers')
        elif st['buffers'] in ('none', 'bounce', 'partial') and \
                not st['bounced-requests']:
            self.fail(f"bounced-requests=0 with buffers={st['buffers']}")

    def _check_logs(self) -> None:
        """QEMU and the daemon must not print errors or warnings, except
        the pinning warning that the unprivileged modes must print"""
        logs = [LOGS / f'{self.name}.{n}.log'
                for n in ('qemu', 'qemu-dst', 'qsd', 'qsd-fuse')]
        text = {p: p.read_text(errors='replace') for p in logs if p.exists()}
        qemu_log = text.get(logs[0], '')
        if self.cfg.memlock_user or self.cfg.nobody:
            warning = [line for line in qemu_log.splitlines()
                       if 'warning: uring' in line]
            if not warning:
                self.fail('QEMU gave no warning that guest RAM could not '
                          'be pinned')
            else:
                self.result.notes.append('QEMU warned: ' + qemu_log.strip())
                text[logs[0]] = ''      # only that warning and its hint
                if re.search(r'error|assert|abort', qemu_log, re.I):
                    self.fail(f'QEMU printed an error: {qemu_log[:300]}')
        for path, content in text.items():
            if re.search(r'error|assert|abort|warning', content, re.I):
                self.fail(f'{path.name} shows errors or warnings: '
                          f'{content.strip()[:300]}')

    def report(self) -> None:
        """The summary"""
        # pylint: disable=too-many-locals
        cfg = self.cfg
        res = self.result
        out = self.out
        if res.failures:
            print(f'\n== console log (tail), {self.console_path}:', file=out)
            for line in self.console.lines[-40:]:
                print(f'   {line}', file=out)
            for p in sorted(LOGS.glob(f'{self.name}.*.log')):
                if p != self.console_path and p.stat().st_size:
                    print(f'== {p}:', file=out)
                    for line in p.read_text(errors='replace').splitlines(
                            )[-20:]:
                        print(f'   {line}', file=out)
        print(f'\n== summary: {self.name}', file=out)
        dev = {'virtio': 'virtio-blk-pci in QEMU',
               'virtio-scsi': 'virtio-scsi-pci + scsi-hd in QEMU',
               'ahci': 'ich9-ahci + ide-hd in QEMU, main loop',
               'nvme': 'nvme in QEMU, main loop'}[cfg.controller]
        if cfg.vhost_user:
            dev = 'vhost-user-blk-pci, qemu-storage-daemon export'
        print(f'{"mode":12} {cfg.mode}: {dev}', file=out)
        print(f'{"backend":12} {cfg.backend_label()}', file=out)
        print(f'{"guest":12} {cfg.accel} {cfg.machine}, {cfg.guest_cpus} '
              f'vCPUs, {cfg.guest_mem}, {cfg.iothreads} IOThread(s), '
              f'{cfg.queues} queue(s), fio {cfg.fio_engine} '
              f'{cfg.region_size} x 4', file=out)
        for line in self.console.markers('GUEST-INFO'):
            print(f'{"guest-info":12} {line[11:]}', file=out)
        print(f"\n{'job':11} {'rc':>3} {'secs':>5} {'rd-IOPS':>10} "
              f"{'rd-lat-us':>10} {'wr-IOPS':>10} {'wr-lat-us':>10}",
              file=out)
        for job, r in res.fio.items():
            def v(key: str, r: Dict[str, str] = r) -> str:
                return r.get(key, '-') if float(r.get(key, 0) or 0) else '-'
            print(f"{job:11} {r.get('rc', '?'):>3} {r.get('secs', '?'):>5} "
                  f"{v('read_iops'):>10} {v('read_lat_us'):>10} "
                  f"{v('write_iops'):>10} {v('write_lat_us'):>10}", file=out)
        self._report_stats()
        self._report_bench()
        if self.migration:
            m = self.migration
            print(f'{"postcopy":12} {m.postcopy or "not checked"}', file=out)
            if m.stats:
                ram = m.stats.get('ram', {})
                print(f"{'migration':12} {m.stats.get('status')} in "
                      f"{m.stats.get('total-time')} ms, downtime "
                      f"{m.stats.get('downtime')} ms, setup "
                      f"{m.stats.get('setup-time')} ms, "
                      f"{ram.get('transferred', 0) // MiB} of "
                      f"{ram.get('total', 0) // MiB} MiB sent "
                      f"({ram.get('duplicate')} zero pages, "
                      f"{ram.get('normal')} normal), "
                      f"{ram.get('mbps', 0):.0f} Mbps, "
                      f"{ram.get('dirty-sync-count')} dirty syncs; the "
                      f"source did {m.source_writes} writes", file=out)
        for handler in (self.nospace, self.faults):
            if handler:
                for s in handler.stops:
                    print(f"{'io-error':12} stopped: {s.get('operation')} "
                          f"nospace={s.get('nospace')} "
                          f"({s.get('reason')})", file=out)
        for note in res.notes:
            print(f'{"note":12} ' + note.replace('\n', '\n' + ' ' * 13),
                  file=out)
        t = self.times
        end = t.get('end', time.monotonic())
        print(f"{'time':12} boot to stats "
              f"{t.get('ready', end) - t.get('boot', end):.0f}s, total "
              f"{end - t['start']:.0f}s", file=out)
        for s in res.skipped:
            print(f'{"skipped":12} {s}', file=out)
        if res.passed:
            print(f'{"result":12} PASS', file=out)
        else:
            print(f'{"result":12} FAIL ({len(res.failures)})', file=out)
            for f in res.failures:
                print(f'  - {f}', file=out)

    def _report_stats(self) -> None:
        st = self.result.stats
        io_stats = self.result.io_stats
        out = self.out
        if not st:
            return
        src = 'qemu-storage-daemon' if self.cfg.vhost_user else 'QEMU'
        print(f'\nstats of disk0-file ({src} query-blockstats, all in '
              f'{LOGS / (self.name + ".stats.json")}):', file=out)
        if st.get('driver') == 'uring':
            print('  ' + ' '.join(f'{k}={st.get(k)}' for k in (
                'rings', 'sqpoll-rings', 'buffers', 'registered-bytes',
                'pinned-bytes', 'shared-buffers', 'process-pinned-bytes')),
                file=out)
            print('  ' + ' '.join(f'{k}={st.get(k)}' for k in (
                'fixed-requests', 'bounced-requests', 'rehomed-requests',
                'bounce-waits', 'flushes', 'sq-wakeups', 'submit-calls',
                'submit-retries', 'queued-requests')), file=out)
            if st.get('buffers') == 'none':
                print('  (no guest memory is registered with the node, '
                      'so requests go through the bounce buffer: only '
                      'virtio-blk in QEMU and the vhost-user-blk export '
                      'register it)', file=out)
        else:
            print(f"  driver={st.get('driver')}", file=out)
        dev = ''
        if io_stats.get('source') == 'backend':
            dev = (f"device: rd={io_stats['rd_operations']} "
                   f"wr={io_stats['wr_operations']} "
                   f"flush={io_stats['flush_operations']}; ")
        print(f"  {dev}discards: ok={st.get('discard-nb-ok')} failed="
              f"{st.get('discard-nb-failed')} bytes="
              f"{st.get('discard-bytes-ok')}", file=out)

    def _check_bench(self) -> None:
        before = self.bench_samples.get('BENCH-BEGIN')
        after = self.bench_samples.get('BENCH-END')
        if not before or not after:
            self.fail("the guest's benchmark jobs did not run (GUEST_BENCH)")
            return
        self.result.bench = bench_report(before, after, self.result.fio,
                                         self.cfg.guest_bench)
        (LOGS / f'{self.name}.bench.json').write_text(
            json.dumps(self.result.bench, indent=1))

    def _report_bench(self) -> None:
        res = self.result.bench
        if not res:
            return
        print(f'\nguest benchmark (fio in the guest, {self.cfg.guest_bench}'
              ' s per job):', file=self.out)
        for name, j in res['jobs'].items():
            print(f"  {name:18} {j['iops']:8d} IOPS  {j['lat_us']:9.1f} us",
                  file=self.out)
        print('  host CPU per I/O, us: ' + ', '.join(
            f'{k} {v:.1f}' for k, v in sorted(res['cpu_us_per_io'].items()))
            + f"; total {res['cpu_us_per_io_total']:.1f}", file=self.out)


def prepare_guest() -> None:
    """The kernel and initramfs, built when missing or out of date"""
    subprocess.run([str(TOP / 'devtools' / 'make-initramfs.sh')], check=True)


def run(cfg: Config, out: TextIO = sys.stdout) -> RunResult:
    """One run of the guest with @cfg; QEMU must be built"""
    needs_qsd = cfg.vhost_user or cfg.eio
    for path in (QEMU, QSD) if needs_qsd else (QEMU,):
        if not path.exists():
            raise ConfigError(f'{path} is missing: run devtools/build.sh')
    prepare_guest()
    return Run(cfg, out).execute()


def compare(results: Sequence[RunResult], out: TextIO = sys.stdout) -> None:
    """Mean latencies of two runs side by side, with their ratio"""
    a, b = results
    print(f'\n== latency, {a.cfg.mode}: {a.cfg.backend} against '
          f'{b.cfg.backend} (fio in the guest, mean us)', file=out)
    print(f"{'job':11} {a.cfg.backend:>10} {b.cfg.backend:>10} "
          f"{'ratio':>7}", file=out)
    for job in ('write-qd1', 'write-qd32', 'read-qd1', 'read-qd32',
                'flush'):
        la, lb = a.latency(job), b.latency(job)
        if la and lb:
            print(f'{job:11} {la:10.1f} {lb:10.1f} {la / lb:6.2f}x',
                  file=out)


def main(argv: List[str]) -> int:
    """make run"""
    unknown = [a for a in argv if a not in ('--vhost-user', '--no-build')]
    if unknown:
        print(f'run_guest.py: unknown argument {unknown[0]} (see --help)',
              file=sys.stderr)
        return 2
    try:
        cfg = Config.from_env(dict(os.environ), '--vhost-user' in argv)
        results = [run(cfg)]
        if cfg.compare:
            results.append(run(replace(cfg, backend='threads',
                                       compare=False)))
            compare(results)
    except ConfigError as err:
        print(f'run_guest.py: {err}', file=sys.stderr)
        return 2
    return 0 if all(r.passed for r in results) else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
