#!/bin/sh
# `prisma generate` insists on a schema engine binary but never needs one to generate a
# client; the real one would be downloaded from Prisma's CDN, which CI cannot reach.
echo "schema engine stub: not available offline" >&2
exit 1
