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

/*
 * Open and close: under the BQL.  @fd is file-posix's descriptor of the
 * image, which keeps the image locks; the rings use a file description of
 * their own, opened with @open_flags.
 */
BDRVUringState *uring_state_new(BlockDriverState *bs, QDict *options,
                                Error **errp);
bool uring_state_start(BDRVUringState *s, int fd, int open_flags,
                       Error **errp);
void uring_state_free(BDRVUringState *s);

/*
 * file-posix changes the image's descriptor to @fd (reopen, auto-read-only):
 * prepare with the permission check, then commit or abort.  Under the BQL.
 */
bool uring_state_prepare_fd(BDRVUringState *s, int fd, int open_flags,
                            Error **errp);
void uring_state_commit_fd(BDRVUringState *s);
void uring_state_abort_fd(BDRVUringState *s);

/*
 * Requests: in any AioContext.  @mem_aligned says whether @qiov's memory
 * is aligned for the image's O_DIRECT, if it uses O_DIRECT.
 */
int coroutine_fn uring_co_prw(BDRVUringState *s, uint64_t offset,
                              QEMUIOVector *qiov, bool is_write,
                              bool mem_aligned, BdrvRequestFlags flags);
int coroutine_fn uring_co_flush(BDRVUringState *s);

/* bdrv_register_buf() and bdrv_unregister_buf(): under the BQL */
bool uring_register_buf(BDRVUringState *s, void *host, size_t size,
                        Error **errp);
void uring_unregister_buf(BDRVUringState *s, void *host, size_t size);

/* bdrv_prepare_io_contexts() and bdrv_release_io_contexts(): under the BQL */
bool uring_prepare_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n, Error **errp);
void uring_release_io_contexts(BDRVUringState *s, AioContext *const *ctxs,
                               unsigned n);

/* The node leaves or joins an AioContext: under the BQL, drained */
void uring_detach_aio_context(BDRVUringState *s);
void uring_attach_aio_context(BDRVUringState *s, AioContext *new_ctx);

/* Under the BQL */
void uring_get_stats(BDRVUringState *s, BlockStatsSpecificUring *stats);
void uring_get_info(BDRVUringState *s, ImageInfoSpecificUring *info);

#endif /* BLOCK_URING_H */
