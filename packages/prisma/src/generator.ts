#!/usr/bin/env node
// The `kms-prisma-types` Prisma generator: `generator kms { provider = "kms-prisma-types" }`.
// It reads the same `///` annotations as `parseSchema`, from the DMMF that Prisma hands every
// generator (the documented generator protocol, not the client's runtime DMMF).
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
// A CommonJS package whose named exports Node's ESM loader cannot detect.
import generatorHelper from "@prisma/generator-helper";
import { schemaModuleSource } from "./internal/schema-module.ts";
import {
  type AnnotatedModel,
  checkAnnotated,
  configFromAnnotations,
  defineModels,
} from "./schema-descriptor.ts";

generatorHelper.generatorHandler({
  onManifest: () => ({ prettyName: "@kms/prisma field types", defaultOutput: "./kms" }),
  async onGenerate(options) {
    // Native types mean what the datasource's provider says (`@db.Float`: single precision on
    // MySQL, double on SQL Server).
    const provider = options.datasources[0]?.activeProvider;
    // Its name is what native type attributes start with (`@pg.` for `datasource pg`).
    const datasource = options.datasources[0]?.name;
    const models: AnnotatedModel[] = options.dmmf.datamodel.models.map((model) => ({
      name: model.name,
      doc: (model.documentation ?? "").split("\n"),
      ...(provider === undefined ? {} : { provider }),
      ...(datasource === undefined ? {} : { datasource }),
      fields: model.fields.map((field) => ({
        name: field.name,
        type: field.type,
        optional: !field.isRequired,
        list: field.isList,
        doc: (field.documentation ?? "").split("\n"),
        ...(field.relationFromFields === undefined ? {} : { foreignKey: field.relationFromFields }),
        ...(typeof field.relationName === "string" ? { relationName: field.relationName } : {}),
        // A composite type's field is of kind "object", like a relation's: no enum.
        isEnum: field.kind === "enum",
        // `@db.VarChar(255)` is `["VarChar", ["255"]]`: written back as schema text gives it.
        ...(field.nativeType == null
          ? {}
          : {
              nativeType:
                field.nativeType[1].length === 0
                  ? field.nativeType[0]
                  : `${field.nativeType[0]}(${field.nativeType[1].join(", ")})`,
            }),
      })),
    }));
    const configs = configFromAnnotations(models);
    // The checks `parseSchema` runs when it loads the schema, so a bad annotation fails
    // `prisma generate` rather than the application importing the module.
    const descriptor = defineModels(configs);
    checkAnnotated(descriptor, models);
    const output = options.generator.output?.value;
    if (output === null || output === undefined) throw new Error(`kms-prisma-types: no output`);
    // `output` names a directory (like prisma-client's) or, ending in .ts, the file itself.
    const file = output.endsWith(".ts") ? output : join(output, "kms-schema.ts");
    const importFrom = options.generator.config.importFrom;
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(
      file,
      schemaModuleSource(configs, typeof importFrom === "string" ? importFrom : undefined),
    );
  },
});
