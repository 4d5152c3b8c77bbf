import { MemoryKeyStore } from "../../src/index.ts";
import { describeGoldenVectors } from "../../src/testing/index.ts";

// Never regenerate the files this reads: see README.md in this folder. Every store package
// runs the same suite against itself.
describeGoldenVectors("MemoryKeyStore", async () => ({ store: new MemoryKeyStore() }));
