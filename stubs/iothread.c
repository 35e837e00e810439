/*
 * IOThread stubs for the tools, which have no IOThreads
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "system/iothread.h"

char *iothread_id_by_aio_context(AioContext *ctx)
{
    return NULL;
}
