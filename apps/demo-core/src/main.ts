import { resolve } from "node:path";
import { walkthrough } from "./walkthrough.ts";

const folder = resolve(process.argv[2] ?? ".kms-demo");
await walkthrough(folder, (line) => console.log(line));
