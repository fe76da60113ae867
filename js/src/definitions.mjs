// The contract as data: fm_runtime/contract.json, the same file the Python runtime reads (keys and
// their schemas, which kinds require them, limits, graph names, solver tableaus, schedule bounds).
// In a page it is fetched from the same server as this module (js/serve.mjs serves the repository).

import CONTRACT from '../../fm_runtime/contract.json' with { type: 'json' };

export { CONTRACT };
export const LIMITS = CONTRACT.limits;
export const KEYS = CONTRACT.keys;
