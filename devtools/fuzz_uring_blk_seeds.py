#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the seed corpus of tests/qtest/fuzz/uring_blk_fuzz.c: valid
requests and the ring operations around them, in the target's action
format (see the comment at the top of that file).

    devtools/fuzz_uring_blk_seeds.py DIR
"""

import os
import struct
import sys

ACT_SQE, ACT_SQ_TAIL, ACT_CQ_HEAD, ACT_CQ_FLAGS, ACT_DOORBELL, ACT_WAIT, \
    ACT_REAP, ACT_RESET = range(8)
OP_FSYNC, OP_READ_FIXED, OP_WRITE_FIXED = 3, 4, 5
READV_FIXED = 60
IOSQE_FIXED_FILE = 1
MODE_BUF_OFFSET, MODE_BUF_INDEX = 1, 2


def sqe(opcode, off=0, buf_off=4096, length=4096, rw_flags=0, data=1,
        flags=IOSQE_FIXED_FILE, mode=MODE_BUF_OFFSET | MODE_BUF_INDEX):
    """An SQE action; with MODE_BUF_OFFSET, addr is an offset + 4 KiB into
    the target's guest buffer"""
    raw = struct.pack('<BBHiQQIIQHHiQQ', opcode, flags, 0, 0, off, buf_off,
                      length, rw_flags, data, 0, 0, 0, 0, 0)
    assert len(raw) == 64
    return bytes([ACT_SQE]) + raw + bytes([mode])


def u32(action, value):
    return bytes([action]) + struct.pack('<I', value & 0xffffffff)


def submit(*sqes):
    return b''.join(sqes) + bytes([ACT_DOORBELL, ACT_WAIT, ACT_REAP])


SEEDS = {
    'read': submit(sqe(OP_READ_FIXED, off=8192)),
    'write-read-fsync': submit(sqe(OP_WRITE_FIXED, off=4096, data=1),
                               sqe(OP_READ_FIXED, off=4096, data=2),
                               sqe(OP_FSYNC, length=0, data=3)),
    'batch': submit(*[sqe(OP_READ_FIXED, off=i * 4096, data=i)
                      for i in range(16)]),
    'write-at-end': submit(sqe(OP_WRITE_FIXED, off=16 * 1024 * 1024 - 2048)),
    'readv-fixed': submit(sqe(READV_FIXED, off=0, length=1)),
    'garbage-tail': u32(ACT_SQ_TAIL, 100000) + bytes([ACT_DOORBELL,
                                                      ACT_WAIT]),
    'cq-head': submit(sqe(OP_READ_FIXED)) + u32(ACT_CQ_HEAD, 0x80000000),
    'eventfd-off': u32(ACT_CQ_FLAGS, 1) + submit(sqe(OP_READ_FIXED)),
    'reset-in-flight': b''.join(sqe(OP_READ_FIXED, off=i * 65536,
                                    length=60 * 1024)
                                for i in range(8)) +
                       bytes([ACT_DOORBELL, ACT_RESET]),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main()
