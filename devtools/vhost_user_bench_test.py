#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""
make check, group vhost-user-bench: the benchmark's front-end
(devtools/vhost-user-bench.c) against qemu-storage-daemon's
vhost-user-blk export, so that make bench measures I/O that really
happened where it should.  The image is checked independently of the
client: Python writes the pattern that the client's reads must find, and
reads what the client's writes left.  TAP on stdout, a few seconds.

  vhost_user_bench_test.py OBJDIR    (the client is OBJDIR/vhost-user-bench)
"""

import array
import json
import os
from pathlib import Path
import subprocess
import sys
import socket
import struct
import tempfile
import threading
from typing import Any, Callable, Dict, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_guest  # noqa: E402  pylint: disable=wrong-import-position

OBJ = Path(sys.argv[1]).resolve()
CLIENT = str(OBJ / 'vhost-user-bench')
SIZE = 16 << 20
BLOCK = 4096
# Keys of the pattern: each 64-bit word is its offset XOR the key
KEY_A, KEY_B, KEY_C = 0x5a5a0000a5a5, 0x1234567800000000, 0x0f0f0f0f


def pattern(key: int, offset: int = 0, size: int = SIZE) -> array.array:
    return array.array('Q', (o ^ key for o in range(offset, offset + size,
                                                    8)))


def read_words(path: Path) -> array.array:
    words = array.array('Q')
    words.frombytes(path.read_bytes())
    return words


class Tap:
    def __init__(self) -> None:
        self.n = 0
        self.failed = 0

    def check(self, name: str, fn: Callable[[], None]) -> None:
        self.n += 1
        try:
            fn()
            print(f'ok {self.n} - {name}', flush=True)
        except Exception as err:  # pylint: disable=broad-except
            self.failed += 1
            print(f'not ok {self.n} - {name}', flush=True)
            for line in str(err).splitlines():
                print(f'# {line}', flush=True)


def client(sock: Path, *args: str, expect_rc: int = 0
           ) -> Tuple[Dict[str, Any], str]:
    """Run the client; its JSON line (if any) and stderr"""
    cmd = [CLIENT, '--socket', str(sock)] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       check=False)
    if r.returncode != expect_rc:
        raise AssertionError(f"{' '.join(cmd)}: exit status {r.returncode}, "
                             f'expected {expect_rc}\n{r.stderr.strip()}')
    lines = r.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), r.stderr


class Export:
    """qemu-storage-daemon serving @image on @sock, 2 queues, in an
    IOThread"""

    def __init__(self, name: str, cfg: run_guest.Config, image: Path,
                 tmp: Path, writable: bool = True):
        name = f'vu-test-{name}'
        self.sock = tmp / f'{name}.sock'
        export = ('type=vhost-user-blk,id=exp0,node-name=disk0,'
                  f'addr.type=unix,addr.path={self.sock},num-queues=2,'
                  f"iothread=iot0,writable={'on' if writable else 'off'}")
        self.qsd = run_guest.StorageDaemon(name, tmp, [
            '--object', 'iothread,id=iot0',
            '--blockdev', json.dumps(run_guest.file_node(cfg, image)),
            '--blockdev', 'driver=raw,node-name=disk0,file=disk0-file',
            '--export', export])

    def __enter__(self) -> 'Export':
        self.qsd.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        failure = self.qsd.stop()
        if failure and not exc[0]:
            raise AssertionError(failure)

    def counts(self) -> Tuple[int, int]:
        spec = run_guest.node_stats(self.qsd.cmd)[0]
        return spec.get('fixed-requests', 0), spec.get('bounced-requests', 0)


def bogus_peer(srv: socket.socket) -> None:
    """Accept one connection and answer its second message (the first,
    SET_OWNER, has no reply) with a reply to request 99"""
    conn, _ = srv.accept()
    with conn:
        for _ in range(2):
            hdr = conn.recv(12, socket.MSG_WAITALL)
            size = struct.unpack('<III', hdr)[2]
            if size:
                conn.recv(size, socket.MSG_WAITALL)
        conn.sendall(struct.pack('<IIIQ', 99, 0x5, 8, 0))


def verified_reads(sock: Path, key: int, *args: str) -> None:
    res, _ = client(sock, '--verify', hex(key), '--time', '0.3',
                    '--warmup', '0.1', *args)
    if res['ios'] <= 0 or res['verify_errors'] or res['io_errors']:
        raise AssertionError(f'reads: {res}')


def tests(tap: Tap, tmp: Path) -> None:
    image = Path(tempfile.mkstemp(prefix='vu-bench-test-', suffix='.img',
                                  dir='/dev/shm')[1])
    try:
        image.write_bytes(pattern(KEY_A).tobytes())
        run_tests(tap, tmp, image)
    finally:
        image.unlink()


def run_tests(tap: Tap, tmp: Path, image: Path) -> None:
    # pylint: disable=too-many-statements
    with Export('uring', run_guest.Config(backend='uring'), image,
                tmp) as exp:
        tap.check('uring: 2 queues of random reads find the pattern',
                  lambda: verified_reads(exp.sock, KEY_A, '--queues', '2',
                                         '--depth', '8'))
        tap.check('uring: polling the used ring',
                  lambda: verified_reads(exp.sock, KEY_A, '--poll'))

        def wrong_key() -> None:
            res, err = client(exp.sock, '--verify', hex(KEY_A ^ 8),
                              '--time', '0.1', '--warmup', '0',
                              expect_rc=1)
            if not res.get('verify_errors') or 'does not match' not in err:
                raise AssertionError(f'no mismatch reported: {res} {err}')
        tap.check('a wrong pattern is reported as a failure', wrong_key)

        def fill() -> None:
            res, _ = client(exp.sock, '--fill', '--verify', hex(KEY_B),
                            '--queues', '2', '--depth', '16')
            if res['ios'] != SIZE // BLOCK:
                raise AssertionError(f"{res['ios']} writes, expected "
                                     f'{SIZE // BLOCK}')
            if read_words(image) != pattern(KEY_B):
                raise AssertionError('the image does not hold the pattern '
                                     'that --fill wrote')
        tap.check('uring: --fill writes every block where it belongs', fill)

        def random_writes() -> None:
            client(exp.sock, '--write', '--verify', hex(KEY_C), '--queues',
                   '2', '--depth', '32', '--time', '0.3', '--warmup', '0.1')
            words = read_words(image)
            per_block = BLOCK // 8
            written = 0
            for b in range(SIZE // BLOCK):
                got = words[b * per_block:(b + 1) * per_block]
                if got == pattern(KEY_C, b * BLOCK, BLOCK):
                    written += 1
                elif got != pattern(KEY_B, b * BLOCK, BLOCK):
                    raise AssertionError(f'block {b} holds neither the old '
                                         'nor the written pattern')
            if not written:
                raise AssertionError('no block holds the written pattern')
        tap.check('uring: random writes land at their offsets',
                  random_writes)

        def counted() -> None:
            fixed, bounced = exp.counts()
            if fixed + bounced < SIZE // BLOCK:
                raise AssertionError(f'fixed {fixed} + bounced {bounced} '
                                     'requests: fewer than --fill wrote')
            print(f'# uring node: fixed-requests {fixed}, bounced-requests '
                  f'{bounced}')
        tap.check("uring: the node's statistics count the requests",
                  counted)

        def errors() -> None:
            _, err = client(exp.sock, '--queues', '3', expect_rc=1)
            if 'the export has 2 queue(s), 3 requested' not in err:
                raise AssertionError(f'--queues 3: {err}')
            with Export('ro', run_guest.Config(backend='threads'), image,
                        tmp, writable=False) as ro:
                _, err = client(ro.sock, '--write', expect_rc=1)
            if 'read-only' not in err:
                raise AssertionError(f'--write on a read-only export: {err}')
            # Not a vhost-user back-end: a peer that answers with
            # another message
            with socket.socket(socket.AF_UNIX) as srv:
                path = exp.sock.with_suffix('.bogus')
                srv.bind(str(path))
                srv.listen(1)
                peer = threading.Thread(target=bogus_peer, args=(srv,))
                peer.start()
                _, err = client(path, '--time', '0.1', expect_rc=1)
                peer.join()
            if 'GET_FEATURES: unexpected reply' not in err:
                raise AssertionError(f'bogus peer: {err}')
        tap.check('errors name the failing step or the export option',
                  errors)

    # The other configurations: --fill's writes where they belong, then
    # verified reads
    others = {
        'uring-sqpoll': run_guest.Config(backend='uring', sqpoll=True,
                                         sqpoll_idle=10),
        'file-io_uring': run_guest.Config(backend='io_uring'),
        'file-threads': run_guest.Config(backend='threads'),
    }
    for i, (name, cfg) in enumerate(others.items()):
        def fill_and_read(name: str = name, cfg: run_guest.Config = cfg,
                          key: int = KEY_A ^ (i + 1) << 32) -> None:
            with Export(name, cfg, image, tmp) as exp:
                client(exp.sock, '--fill', '--verify', hex(key), '--queues',
                       '2', '--depth', '16')
                if read_words(image) != pattern(key):
                    raise AssertionError('the image does not hold the '
                                         'pattern that --fill wrote')
                verified_reads(exp.sock, key, '--queues', '2', '--depth',
                               '4')
        tap.check(f'{name}: --fill, then verified reads', fill_and_read)

    # Enough requests in flight that the IOThread's io_uring fills up while
    # it handles one queue's kick, and submits another queue's re-armed
    # poll of its kick eventfd before that kick is read: the eventfd is
    # reported ready again once empty, which libvhost-user took for an
    # error and stopped the queue
    def deep_queues() -> None:
        with Export('deep', run_guest.Config(backend='io_uring'), image,
                    tmp) as exp:
            for _ in range(3):
                client(exp.sock, '--queues', '2', '--depth', '128',
                       '--time', '0.3', '--warmup', '0.1')
    tap.check('file-io_uring: 2 queues of 128 requests keep running',
              deep_queues)


def main() -> int:
    tap = Tap()
    run_guest.LOGS.mkdir(parents=True, exist_ok=True)
    if not os.access(CLIENT, os.X_OK):
        print(f'Bail out! {CLIENT} is not built')
        return 1
    with tempfile.TemporaryDirectory(prefix='vu-bench-test-') as tmp:
        tests(tap, Path(tmp))
    print(f'1..{tap.n}')
    return 1 if tap.failed else 0


if __name__ == '__main__':
    sys.exit(main())
