import { describeKeyStoreConformance } from "../testing/key-store-conformance.ts";
import { MemoryKeyStore } from "./memory-key-store.ts";

describeKeyStoreConformance("MemoryKeyStore", async () => ({ store: new MemoryKeyStore() }));
