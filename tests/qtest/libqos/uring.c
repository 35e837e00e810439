/*
 * libqos helpers for the tests of the uring block driver
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/resource.h>
#include <linux/capability.h>
#include "qemu/io_uring-restrictions.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "uring.h"

bool qos_uring_usable(bool sqpoll)
{
#ifdef HAVE_IO_URING_SETUP_R_DISABLED
    return qemu_io_uring_restricted_ring_usable(sqpoll ? IORING_SETUP_SQPOLL
                                                       : 0);
#else
    return false;
#endif
}

bool qos_uring_can_pin_memory(void)
{
    g_autofree char *status = NULL;
    struct rlimit rlim;
    const char *caps;

    if (!getrlimit(RLIMIT_MEMLOCK, &rlim) && rlim.rlim_cur == RLIM_INFINITY) {
        return true;
    }
    if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL)) {
        return false;
    }
    caps = strstr(status, "\nCapEff:");
    return caps && (g_ascii_strtoull(caps + strlen("\nCapEff:"), NULL, 16) &
                    (1ULL << CAP_IPC_LOCK));
}

QDict *qos_uring_node_stats(QTestState *qts, const char *node_name)
{
    QDict *rsp = qtest_qmp(qts, "{ 'execute': 'query-blockstats', "
                           "  'arguments': { 'query-nodes': true } }");
    QDict *stats = NULL;
    QListEntry *e;

    g_assert(qdict_haskey(rsp, "return"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *node = qobject_to(QDict, qlist_entry_obj(e));

        if (!g_strcmp0(qdict_get_try_str(node, "node-name"), node_name)) {
            stats = qdict_get_qdict(node, "driver-specific");
            qobject_ref(stats);
        }
    }
    qobject_unref(rsp);
    g_assert_nonnull(stats);
    g_assert_cmpstr(qdict_get_str(stats, "driver"), ==, "uring");
    return stats;
}
