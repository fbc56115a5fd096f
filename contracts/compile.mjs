// Compiles the contracts with the pinned npm `solc` (standard JSON, optimizer on) and writes
// one artifact per contract (ABI, creation and runtime bytecode) to `out/` or `--out DIR`.
//
// The artifacts are committed so the Rust build needs no Node; `scripts/check-contracts`
// recompiles into a temporary directory and fails when the two differ. Output is
// deterministic: sources are listed in sorted order, keys are written in a fixed order, and
// the metadata hash is left out of the bytecode (a comment edit must not change the code).
import { readFileSync, writeFileSync, mkdirSync, readdirSync } from "node:fs";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outIdx = args.indexOf("--out");
const outDir = outIdx >= 0 ? args[outIdx + 1] : join(root, "out");

// Our sources: production contracts in src/, test-only contracts in test/.
const sourceDirs = ["src", "test"];
const sources = {};
for (const dir of sourceDirs) {
  for (const file of readdirSync(join(root, dir)).sort()) {
    if (file.endsWith(".sol")) {
      const key = `${dir}/${file}`;
      sources[key] = { content: readFileSync(join(root, key), "utf8") };
    }
  }
}

// OpenZeppelin and anything else imported by package name comes from node_modules.
function findImports(path) {
  try {
    return { contents: readFileSync(require.resolve(path), "utf8") };
  } catch {
    try {
      return { contents: readFileSync(join(root, path), "utf8") };
    } catch (e) {
      return { error: `not found: ${path} (${e.message})` };
    }
  }
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    // Cancun: understood by revm, anvil and today's public EVM chains.
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 10000 },
    metadata: { bytecodeHash: "none" },
    outputSelection: {
      "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
    },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) {
  process.stderr.write(e.formattedMessage + "\n");
}
if (errors.length > 0) {
  process.exit(1);
}

mkdirSync(outDir, { recursive: true });
for (const sourceName of Object.keys(sources)) {
  for (const [contractName, c] of Object.entries(output.contracts[sourceName] ?? {})) {
    const bytecode = c.evm.bytecode.object;
    if (bytecode.length === 0) continue; // interfaces and abstract contracts
    const artifact = {
      contractName,
      sourceName,
      compiler: `solc ${solc.version()}`,
      abi: c.abi,
      bytecode: `0x${bytecode}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    };
    const file = join(outDir, `${contractName}.json`);
    writeFileSync(file, JSON.stringify(artifact, null, 2) + "\n");
    process.stdout.write(`${relative(process.cwd(), file)}  ${bytecode.length / 2} bytes initcode, ${c.evm.deployedBytecode.object.length / 2} bytes runtime\n`);
  }
}
