// The contract as data: fm_runtime/contract.json, the same file the Python runtime reads (keys and
// their schemas, which kinds require them, limits, graph names, solver tableaus, schedule bounds),
// copied here as src/contract.json by `npm ci` in js/ (scripts/shared-files.mjs) so that the npm
// package carries it. In a page it is fetched from the same server as this module.

import CONTRACT from './contract.json' with { type: 'json' };

export { CONTRACT };
export const LIMITS = CONTRACT.limits;
export const KEYS = CONTRACT.keys;
