import { describeAdversarial } from "./adversarial.behaviour.ts";
import { sqliteBackend } from "./backends.ts";
import { describeDemo } from "./demo.behaviour.ts";

describeDemo("demo-nest-typeorm on SQLite", sqliteBackend);
describeAdversarial("demo-nest-typeorm under attack on SQLite", sqliteBackend);
