#!/usr/bin/env node
// A generator for tests: writes the documentation Prisma's own parser attached to each model
// and field (the DMMF every generator receives), for comparison with schema text's reading.
import { writeFileSync } from "node:fs";
// A CommonJS package whose named exports Node's ESM loader cannot detect.
import generatorHelper from "@prisma/generator-helper";

generatorHelper.generatorHandler({
  onManifest: () => ({ prettyName: "DMMF documentation (tests)", defaultOutput: "./docs.json" }),
  async onGenerate(options) {
    const output = options.generator.output?.value;
    if (output === null || output === undefined) throw new Error(`docs-generator: no output`);
    const models = options.dmmf.datamodel.models.map((model) => ({
      name: model.name,
      doc: model.documentation ?? null,
      fields: model.fields.map((field) => ({ name: field.name, doc: field.documentation ?? null })),
    }));
    writeFileSync(output, JSON.stringify(models, null, 2));
  },
});
