/*
 * The image of a uring node, for a device that lets its guest drive it
 *
 * Copyright (c) 2026 The uring series authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_URING_IMAGE_H
#define BLOCK_URING_IMAGE_H

#include "block/block-common.h"

/*
 * A new file description of the image of uring node @bs, with the flags
 * of the node's rings (O_DIRECT with cache.direct=on, O_RDONLY for a
 * read-only node), which holds none of the image's locks.  It is for
 * another process (x-uring-blk-pci's helper): QEMU's own I/O goes through
 * the node.  Returns -1 with @errp set if @bs is not a uring node.
 * Under the BQL.
 */
int bdrv_uring_open_image(BlockDriverState *bs, Error **errp);

#endif /* BLOCK_URING_IMAGE_H */
