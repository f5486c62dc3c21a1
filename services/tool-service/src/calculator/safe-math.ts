// Arithmetic without eval: mathjs parses the expression into a tree, and only the node types,
// operators, functions and constants listed here are allowed before anything is evaluated.
// Everything that could reach mathjs's own machinery (import, evaluate, createUnit, parse,
// assignments, function definitions, property access, units) is refused at the tree level.
import type { MathJsInstance, MathNode } from 'mathjs';

/**
 * mathjs, loaded on the first calculation: requiring it takes 0.5–4 s of CPU (most of the
 * tool-service's start, which held back its readiness). The number-only build: the calculator
 * works on numbers (doubles) anyway.
 */
let instance: MathJsInstance | undefined;
function math(): MathJsInstance {
  if (!instance) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { all, create } = require('mathjs/number') as typeof import('mathjs');
    instance = create(all!, { number: 'number', precision: 64 });
  }
  return instance;
}

/** Longest expression accepted, in characters. */
export const MAX_EXPRESSION_LENGTH = 500;
/** Most tree nodes accepted (bounds the evaluation work). */
const MAX_NODES = 200;
/** Largest factorial argument: beyond 170! a double is Infinity anyway. */
const MAX_FACTORIAL = 170;

const OPERATORS = new Set(['add', 'subtract', 'multiply', 'divide', 'pow', 'mod', 'unaryMinus', 'unaryPlus', 'factorial', 'dotMultiply', 'dotDivide']);
const FUNCTIONS = new Set([
  'sqrt', 'cbrt', 'abs', 'sign', 'exp', 'log', 'log10', 'log2', 'log1p', 'pow', 'mod', 'hypot',
  'sin', 'cos', 'tan', 'asin', 'acos', 'atan', 'atan2', 'sinh', 'cosh', 'tanh',
  'round', 'floor', 'ceil', 'fix', 'min', 'max', 'mean', 'median', 'sum', 'gcd', 'lcm', 'factorial',
]);
const CONSTANTS = new Set(['pi', 'e', 'tau', 'phi', 'PI', 'E']);

export class CalculatorError extends Error {
  override name = 'CalculatorError';
}

/** Checks that every node of the tree is one the calculator allows; throws CalculatorError otherwise. */
export function checkTree(root: MathNode): void {
  let count = 0;
  root.traverse((node, _path, parent) => {
    if (++count > MAX_NODES) throw new CalculatorError(`expression is too complex (more than ${MAX_NODES} terms)`);
    switch (node.type) {
      case 'ConstantNode': {
        const value = (node as unknown as { value: unknown }).value;
        if (typeof value !== 'number') throw new CalculatorError('only numbers are allowed as literals');
        return;
      }
      case 'ParenthesisNode':
        return;
      case 'OperatorNode': {
        const fn = (node as unknown as { fn: string }).fn;
        if (!OPERATORS.has(fn)) throw new CalculatorError(`operator "${(node as unknown as { op: string }).op}" is not allowed`);
        return;
      }
      case 'FunctionNode': {
        const name = (node as unknown as { fn: { name?: string } }).fn.name;
        if (!name || !FUNCTIONS.has(name)) throw new CalculatorError(`function "${name ?? '?'}" is not allowed`);
        return;
      }
      case 'SymbolNode': {
        const name = (node as unknown as { name: string }).name;
        // A function's own name is a SymbolNode child of its FunctionNode: already checked there.
        if (parent?.type === 'FunctionNode' && (parent as unknown as { fn: MathNode }).fn === node) return;
        if (!CONSTANTS.has(name)) throw new CalculatorError(`unknown symbol "${name}" (allowed constants: pi, e, tau, phi)`);
        return;
      }
      default:
        throw new CalculatorError(`${node.type.replace(/Node$/, '').toLowerCase()} expressions are not allowed`);
    }
  });
}

/** Evaluates an arithmetic expression to a finite number. */
export function calculate(expression: string): number {
  if (expression.length > MAX_EXPRESSION_LENGTH) {
    throw new CalculatorError(`expression is longer than ${MAX_EXPRESSION_LENGTH} characters`);
  }
  let tree: MathNode;
  try {
    tree = math().parse(expression);
  } catch (err) {
    throw new CalculatorError(`cannot parse expression: ${(err as Error).message}`);
  }
  checkTree(tree);
  // Factorials of huge arguments would run the gamma function on nonsense; bound them.
  tree.traverse((node) => {
    const isFactorial =
      (node.type === 'OperatorNode' && (node as unknown as { fn: string }).fn === 'factorial') ||
      (node.type === 'FunctionNode' && (node as unknown as { fn: { name?: string } }).fn.name === 'factorial');
    if (!isFactorial) return;
    const arg = (node as unknown as { args: MathNode[] }).args[0];
    const v = arg ? Number(arg.compile().evaluate({})) : NaN;
    if (!Number.isInteger(v) || v < 0 || v > MAX_FACTORIAL) {
      throw new CalculatorError(`factorial is defined here for integers 0..${MAX_FACTORIAL}`);
    }
  });
  let value: unknown;
  try {
    value = tree.compile().evaluate({});
  } catch (err) {
    throw new CalculatorError(`cannot evaluate: ${(err as Error).message}`);
  }
  if (typeof value !== 'number') throw new CalculatorError('the result is not a single number');
  if (!Number.isFinite(value)) throw new CalculatorError('the result is not a finite number (overflow or division by zero)');
  return value;
}
