#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Host CPU time of QEMU's threads during the guest's benchmark jobs.
#
#   threads.py sample OUT PID...         CPU ticks of every thread
#   threads.py report BEFORE AFTER CONSOLE SECS OUT
#       CPU per I/O by kind of thread (vCPU, IOThread, main loop, SQ
#       polling thread, io-wq workers) over the bench-* fio jobs that
#       the console log reports; writes JSON to OUT and prints a table.

import json
import os
import re
import sys

HZ = os.sysconf('SC_CLK_TCK')


def sample(out, pids):
    threads = {}
    for pid in pids:
        for tid in os.listdir(f'/proc/{pid}/task'):
            try:
                with open(f'/proc/{pid}/task/{tid}/stat') as f:
                    stat = f.read()
            except OSError:
                continue
            # comm may contain spaces: it is the text between ( and )
            comm = stat[stat.index('(') + 1:stat.rindex(')')]
            fields = stat[stat.rindex(')') + 2:].split()
            ticks = int(fields[11]) + int(fields[12])   # utime + stime
            threads[f'{pid}/{tid}'] = {'comm': comm, 'ticks': ticks}
    with open(out, 'w') as f:
        json.dump(threads, f)


def kind(comm):
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


def report(before_file, after_file, console, secs, out):
    with open(before_file) as f:
        before = json.load(f)
    with open(after_file) as f:
        after = json.load(f)
    cpu = {}
    for tid, t in after.items():
        ticks = t['ticks'] - before.get(tid, {'ticks': 0})['ticks']
        k = kind(t['comm'])
        cpu[k] = cpu.get(k, 0) + ticks / HZ

    jobs = {}
    with open(console, errors='replace') as f:
        for line in f:
            m = re.match(r'FIO-RESULT job=(bench-\S+) .*read_iops=(\d+) .*'
                         r'read_lat_us=([\d.]+) write_iops=(\d+) .*'
                         r'write_lat_us=([\d.]+)', line.strip())
            if m:
                iops = int(m[2]) + int(m[4])
                lat = float(m[3]) if int(m[2]) else float(m[5])
                jobs[m[1]] = {'iops': iops, 'lat_us': lat}
    ios = sum(j['iops'] for j in jobs.values()) * secs
    per_io = {k: v / ios * 1e6 for k, v in cpu.items()} if ios else {}
    result = {'jobs': jobs, 'cpu_s': cpu, 'ios': ios,
              'cpu_us_per_io': per_io,
              'cpu_us_per_io_total': sum(per_io.values())}
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)

    print('guest benchmark (fio in the guest, %d s per job):' % secs)
    for name, j in jobs.items():
        print(f'  {name:18} {j["iops"]:8d} IOPS  {j["lat_us"]:9.1f} us')
    print('  host CPU per I/O, us: ' +
          ', '.join(f'{k} {v:.1f}' for k, v in sorted(per_io.items())) +
          f'; total {result["cpu_us_per_io_total"]:.1f}')


def main():
    if sys.argv[1] == 'sample':
        sample(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == 'report':
        report(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
               sys.argv[6])
    else:
        sys.exit(f'usage: {sys.argv[0]} sample|report ...')


if __name__ == '__main__':
    main()
