#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Minimal QMP client for devtools/run-guest.sh (standard library only).
#
#   qmp.py SOCKET stats NODE [JSON-FILE]
#       query-blockstats and print the statistics of NODE as KEY=VALUE
#       lines: its driver-specific data first, then, prefixed with
#       "stats.", the I/O accounting of the BlockBackend above it (of
#       the node itself when no listed backend uses it).  Both answers
#       go to JSON-FILE when given.
#   qmp.py SOCKET quit
#   qmp.py SOCKET send-line TEXT
#       SOCKET is not QMP but a chardev: write TEXT and a newline.

import json
import socket
import sys
import time


def connect(path, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(timeout)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class QMP:
    def __init__(self, path):
        self.sock = connect(path)
        self.file = self.sock.makefile('rwb')
        self.read_message()             # greeting
        self.command('qmp_capabilities')

    def read_message(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError('QMP connection closed')
        return json.loads(line)

    def command(self, name, **args):
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.file.write(json.dumps(msg).encode() + b'\n')
        self.file.flush()
        while True:
            resp = self.read_message()
            if 'event' in resp:
                continue
            if 'error' in resp:
                raise RuntimeError('%s: %s' % (name, resp['error']['desc']))
            return resp['return']


def flatten(prefix, data, out):
    for key, value in data.items():
        if isinstance(value, dict):
            flatten(prefix + key + '.', value, out)
        elif isinstance(value, bool):
            out.append('%s%s=%s' % (prefix, key, 'true' if value else 'false'))
        elif not isinstance(value, list):
            out.append('%s%s=%s' % (prefix, key, value))


def cmd_stats(path, node, json_file=None):
    qmp = QMP(path)
    nodes = qmp.command('query-blockstats', **{'query-nodes': True})
    # The I/O accounting is the BlockBackend's (the device's or the
    # export's), not the nodes'; exports have anonymous backends that
    # query-blockstats does not list, so fall back to the node.
    backends = qmp.command('query-blockstats')
    if json_file:
        with open(json_file, 'w') as f:
            json.dump({'nodes': nodes, 'backends': backends}, f, indent=2)
    entry = next((e for e in nodes if e.get('node-name') == node), None)
    if entry is None:
        print('node %s not found in query-blockstats' % node, file=sys.stderr)
        return 1
    stats = entry.get('stats', {})
    source = 'node'
    for b in backends:
        # A backend whose root node (or a child) is @node
        p = b
        while p is not None:
            if p.get('node-name') == node:
                stats = b.get('stats', {})
                source = 'backend'
                break
            p = p.get('parent')
    out = []
    flatten('', entry.get('driver-specific', {}), out)
    flatten('stats.', stats, out)
    out.append('stats.source=' + source)
    print('\n'.join(out))
    return 0


def cmd_quit(path):
    qmp = QMP(path)
    try:
        qmp.command('quit')
    except ConnectionError:
        pass
    return 0


def cmd_send_line(path, text):
    s = connect(path)
    s.sendall(text.encode() + b'\n')
    # Let the chardev read it before the connection goes away
    time.sleep(0.5)
    s.close()
    return 0


def main(argv):
    if len(argv) >= 4 and argv[2] == 'stats':
        return cmd_stats(argv[1], argv[3], argv[4] if len(argv) > 4 else None)
    if len(argv) == 3 and argv[2] == 'quit':
        return cmd_quit(argv[1])
    if len(argv) == 4 and argv[2] == 'send-line':
        return cmd_send_line(argv[1], argv[3])
    print('usage: qmp.py SOCKET stats NODE [JSON-FILE] | quit | '
          'send-line TEXT', file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
