// The errors the sampler raises on purpose: the same classes, names and exit codes as the Python
// runtime's fm_runtime/errors.py, so a caller can tell a bad file from a bad argument.

export class FmError extends Error {
  /** key and field, where known, say what was refused in a form programs compare (as in Python:
   * key an fm.* metadata key or a request argument, field the path inside its value). */
  constructor(message, { key = null, field = null } = {}) {
    super(message);
    this.name = this.constructor.name;
    this.key = key;
    this.field = field;
  }
}
FmError.prototype.exitCode = 1;

/** A bad argument (Python: UsageError, exit code 2). */
export class UsageError extends FmError {}
UsageError.prototype.exitCode = 2;

/** A model file that is missing, unreadable, corrupted or not a usable model (exit code 3). */
export class ModelError extends FmError {}
ModelError.prototype.exitCode = 3;

/** Noise or labels that cannot be used: wrong length, NaN/Inf (exit code 4). */
export class InputError extends FmError {}
InputError.prototype.exitCode = 4;

/** The solve produced NaN or Inf (exit code 5). */
export class NumericalError extends FmError {}
NumericalError.prototype.exitCode = 5;

/** The request needs more memory than this runtime handles (exit code 9). */
export class ResourceError extends FmError {}
ResourceError.prototype.exitCode = 9;

/** A request stopped at its deadline (sample()'s timeoutMs; Python: TimedOut, exit code 124). */
export class TimedOut extends FmError {}
TimedOut.prototype.exitCode = 124;

/** A request cancelled by its AbortSignal (Python: Interrupted, exit code 130). */
export class Interrupted extends FmError {}
Interrupted.prototype.exitCode = 130;

// mirrors: fm_runtime/errors.py (printable)
/** Text from a model file, safe to show: control characters escaped, one line. */
export function printable(text) {
  return String(text).replace(/[\u0000-\u001f\u007f-\u009f]/g,
    (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}

// mirrors: fm_runtime/errors.py (show)
/** A value as Python's repr() writes it (strings in single quotes, None, True), so messages read
 * the same as the Python runtime's; cut at 60 characters like its raw[:60]. */
export function show(value) {
  const repr = (v) => {
    if (v === null || v === undefined) return 'None';
    if (typeof v === 'boolean') return v ? 'True' : 'False';
    if (typeof v === 'string') return v.includes("'") && !v.includes('"') ? `"${v}"` : `'${v.replace(/'/g, "\\'")}'`;
    if (typeof v === 'number' || typeof v === 'bigint') return String(v);
    if (Array.isArray(v) || ArrayBuffer.isView(v)) return `[${Array.from(v, repr).join(', ')}]`;
    if (typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${repr(k)}: ${repr(x)}`).join(', ')}}`;
    return String(v);
  };
  const s = repr(value);
  return printable(s.length > 80 ? s.slice(0, 80) + '...' : s);
}
