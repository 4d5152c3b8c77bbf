import { ConfigurableModuleBuilder, type DynamicModule } from "@nestjs/common";
import { APP_FILTER } from "@nestjs/core";
import { KmsExceptionFilter } from "./kms-exception.filter.ts";
import type { KmsModuleOptions } from "./kms-module.options.ts";

interface KmsModuleExtras {
  /** Register the module globally (default true), so guards and interceptors resolve anywhere. */
  readonly isGlobal?: boolean;
  /** Register `KmsExceptionFilter` app-wide (default false): KMS errors → problem+json. */
  readonly mapKmsErrors?: boolean;
}

export const {
  ConfigurableModuleClass: KmsConfigurableModule,
  MODULE_OPTIONS_TOKEN: KMS_MODULE_OPTIONS,
  OPTIONS_TYPE: KMS_MODULE_OPTIONS_TYPE,
  ASYNC_OPTIONS_TYPE: KMS_MODULE_ASYNC_OPTIONS_TYPE,
} = new ConfigurableModuleBuilder<KmsModuleOptions>({ moduleName: "Kms" })
  .setClassMethodName("forRoot")
  .setExtras<KmsModuleExtras>(
    { isGlobal: true, mapKmsErrors: false },
    (definition: DynamicModule, extras: KmsModuleExtras): DynamicModule => ({
      ...definition,
      global: extras.isGlobal ?? true,
      providers: [
        ...(definition.providers ?? []),
        ...(extras.mapKmsErrors === true
          ? [{ provide: APP_FILTER, useClass: KmsExceptionFilter }]
          : []),
      ],
    }),
  )
  .build();
