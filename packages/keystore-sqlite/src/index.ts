export {
  SqliteKeyStore,
  type SqliteKeyStoreOptions,
  type SqliteSynchronous,
} from "./sqlite-key-store.ts";
