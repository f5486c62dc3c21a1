/**
 * An Anthropic beta's name as the `anthropic-beta` header carries it (`context-1m-2025-08-07`), in
 * lower case: what the edge, the broker and its configuration take.
 */
export const ANTHROPIC_BETA_NAME = /^[a-z0-9][a-z0-9._-]{0,99}$/;

/** The most betas one call may ask for. */
export const MAX_ANTHROPIC_BETAS = 32;
