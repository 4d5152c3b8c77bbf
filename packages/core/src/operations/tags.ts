import { TagError } from "../errors.ts";
import { assertObject, isPlainObject } from "../internal/assert.ts";
import { type KmsContext, updateKey } from "../internal/key-access.ts";
import { pageLimit, pageMarker, toPage } from "../internal/pagination.ts";
import { isWellFormed } from "../internal/unicode.ts";
import type {
  ListResourceTagsRequest,
  ListResourceTagsResponse,
  Tag,
  TagResourceRequest,
  UntagResourceRequest,
} from "../types.ts";
import { directKeyId, loadDirectKey } from "./key-arguments.ts";

export const MAX_TAGS_PER_KEY = 50;

/**
 * Merges `added` into `existing` under AWS's rules: keys 1–128 characters, values 0–256, the
 * `aws:` prefix reserved, a repeated key replaces the old value, at most 50 tags per key. Each
 * tag must be a plain object whose tagKey and tagValue are read once (no class instances).
 * @throws TagError naming the offending tag.
 */
export function validateTags(added: readonly Tag[], existing: readonly Tag[]): Tag[] {
  if (!Array.isArray(added)) throw new TagError(`"tags" expected an array of { tagKey, tagValue }`);
  const merged = new Map(existing.map((t) => [t.tagKey, t.tagValue]));
  for (const [i, tag] of added.entries()) {
    if (!isPlainObject(tag)) {
      throw new TagError(`"tags[${i}]" must be a plain object { tagKey, tagValue }`);
    }
    const { tagKey, tagValue } = tag;
    if (typeof tagKey !== "string" || tagKey.length < 1 || tagKey.length > 128) {
      throw new TagError(`"tags[${i}].tagKey" must be a string of 1–128 characters`);
    }
    if (typeof tagValue !== "string" || tagValue.length > 256) {
      throw new TagError(`"tags[${i}].tagValue" must be a string of 0–256 characters`);
    }
    if (!isWellFormed(tagKey) || !isWellFormed(tagValue)) {
      throw new TagError(`"tags[${i}]" must be well-formed Unicode (no lone surrogates)`);
    }
    if (tagKey.toLowerCase().startsWith("aws:")) {
      throw new TagError(`"tags[${i}].tagKey" ${tagKey}: the aws: prefix is reserved`);
    }
    merged.set(tagKey, tagValue);
  }
  if (merged.size > MAX_TAGS_PER_KEY) {
    throw new TagError(
      `a key can have at most ${MAX_TAGS_PER_KEY} tags, this would make ${merged.size}`,
    );
  }
  return [...merged].map(([tagKey, tagValue]) => ({ tagKey, tagValue }));
}

export async function tagResource(ctx: KmsContext, request: TagResourceRequest): Promise<void> {
  assertObject("request", request);
  const keyId = directKeyId(ctx, "tagResource", "keyId", request.keyId);
  await updateKey(ctx, keyId, "tagResource", (key) => ({
    tags: validateTags(request.tags, key.tags),
  }));
}

export async function untagResource(ctx: KmsContext, request: UntagResourceRequest): Promise<void> {
  assertObject("request", request);
  if (!Array.isArray(request.tagKeys)) {
    throw new TagError(`"tagKeys" expected an array of strings`);
  }
  // The same rule as a tag's key when it is added: a key no tag can have is a caller's mistake.
  for (const [i, tagKey] of request.tagKeys.entries()) {
    if (typeof tagKey !== "string" || tagKey.length < 1 || tagKey.length > 128) {
      throw new TagError(`"tagKeys[${i}]" must be a string of 1–128 characters`);
    }
  }
  const remove = new Set(request.tagKeys);
  const keyId = directKeyId(ctx, "untagResource", "keyId", request.keyId);
  await updateKey(ctx, keyId, "untagResource", (key) => ({
    tags: key.tags.filter((t) => !remove.has(t.tagKey)),
  }));
}

export async function listResourceTags(
  ctx: KmsContext,
  request: ListResourceTagsRequest,
): Promise<ListResourceTagsResponse> {
  assertObject("request", request);
  const limit = pageLimit(request, { max: 50, default: 50 });
  const key = await loadDirectKey(ctx, "listResourceTags", "keyId", request.keyId);
  const scope = `listResourceTags ${key.keyId}`;
  const after = pageMarker(request, scope);
  const sorted = [...key.tags].sort((a, b) => (a.tagKey < b.tagKey ? -1 : 1));
  const remaining = after === undefined ? sorted : sorted.filter((t) => t.tagKey > after);
  const page = toPage(remaining.slice(0, limit + 1), limit, (t) => t.tagKey, scope);
  return {
    tags: page.items,
    truncated: page.truncated,
    ...(page.nextMarker !== undefined ? { nextMarker: page.nextMarker } : {}),
  };
}
