/*
 * libqos helpers for the tests of the uring block driver
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef LIBQOS_URING_H
#define LIBQOS_URING_H

#include "../libqtest.h"

/*
 * qos_uring_usable:
 * @sqpoll: whether the rings would have an SQ polling thread
 *
 * Returns: whether QEMU can set up the uring driver's rings on this host:
 * they start disabled so that restrictions can be installed (Linux 5.10),
 * and io_uring may be turned off (kernel.io_uring_disabled, seccomp).
 */
bool qos_uring_usable(bool sqpoll);

/*
 * qos_uring_can_pin_memory:
 *
 * Returns: whether a QEMU that this process starts may pin guest memory as
 * fixed buffers.  io_uring charges it to RLIMIT_MEMLOCK unless the process
 * has CAP_IPC_LOCK; where neither allows it, tests use fixed-buffers=off.
 */
bool qos_uring_can_pin_memory(void);

/*
 * qos_uring_node_stats:
 * @qts: the QEMU process
 * @node_name: a node of driver=uring
 *
 * Returns: the driver-specific part of query-blockstats for @node_name
 * (a new reference); the test fails if there is no such uring node.
 */
QDict *qos_uring_node_stats(QTestState *qts, const char *node_name);

#endif
