/*
 * uring block driver: the per-node interface used by file-posix.c
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_URING_H
#define BLOCK_URING_H

#include "block/aio.h"
#include "block/block-common.h"
#include "qapi/qapi-types-block-core.h"

typedef struct BDRVUringState BDRVUringState;

BDRVUringState *uring_state_new(BlockDriverState *bs, QDict *options,
                                Error **errp);
bool uring_state_start(BDRVUringState *s, int fd, Error **errp);
void uring_state_free(BDRVUringState *s);
int uring_state_set_fd(BDRVUringState *s, int fd);
int coroutine_fn uring_co_prw(BDRVUringState *s, uint64_t offset,
                              QEMUIOVector *qiov, bool is_write,
                              BdrvRequestFlags flags);
int coroutine_fn uring_co_flush(BDRVUringState *s);
bool uring_register_buf(BDRVUringState *s, void *host, size_t size,
                        Error **errp);
void uring_unregister_buf(BDRVUringState *s, void *host, size_t size);
bool uring_prepare_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n, Error **errp);
void uring_release_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n);
void uring_detach_aio_context(BDRVUringState *s, AioContext *old_ctx);
void uring_get_stats(BDRVUringState *s, BlockStatsSpecificUring *stats);

#endif /* BLOCK_URING_H */
