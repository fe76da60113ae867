// The errors the sampler raises on purpose: the same classes, names and exit codes as the Python
// runtime's fm_runtime/errors.py, so a caller can tell a bad file from a bad argument.

export class FmError extends Error {
  constructor(message) {
    super(message);
    this.name = this.constructor.name;
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

/** Text from a model file, safe to show: control characters escaped, one line. */
export function printable(text) {
  return String(text).replace(/[\u0000-\u001f\u007f-\u009f]/g,
    (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));
}

/** A short repr of a value for a message (JSON where possible, cut at 60 characters). */
export function show(value) {
  let s;
  try { s = typeof value === 'bigint' ? String(value) : JSON.stringify(value); } catch { s = undefined; }
  if (s === undefined) s = String(value);
  return printable(s.length > 60 ? s.slice(0, 60) + '...' : s);
}
