import { sqliteBackend } from "./backends.ts";
import { describeDemo } from "./demo.behaviour.ts";

describeDemo("demo-nest-typeorm on SQLite", sqliteBackend);
