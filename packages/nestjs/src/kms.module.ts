import { createKms, type KmsLike } from "@kms/core";
import { MemoryNonceStore, type NonceStore } from "@kms/http-signatures";
import { Module } from "@nestjs/common";
import { APP_FILTER } from "@nestjs/core";
import { KMS_CLIENT, KMS_NONCE_STORE } from "./kms.constants.ts";
import { KMS_MODULE_OPTIONS, KmsConfigurableModule } from "./kms.module-definition.ts";
import { KmsService } from "./kms.service.ts";
import { KmsContextInterceptor } from "./kms-context.interceptor.ts";
import type { KmsModuleOptions } from "./kms-module.options.ts";
import { ProblemDetailsFilter } from "./problem-details.filter.ts";
import { SignResponseInterceptor } from "./sign-response.interceptor.ts";
import { SignatureGuard } from "./signature.guard.ts";

/**
 * The KMS for a Nest application: `KmsModule.forRoot(options)` or
 * `KmsModule.forRootAsync({ imports, inject, useFactory })`. Provides `KmsService`, the
 * `KMS_CLIENT` token, `SignatureGuard`, `SignResponseInterceptor` and `KmsContextInterceptor`;
 * global by default (`isGlobal: false` to scope it). Registers `ProblemDetailsFilter` so
 * signature and context failures are answered as `application/problem+json`.
 */
@Module({
  providers: [
    {
      provide: KMS_CLIENT,
      useFactory: async (options: KmsModuleOptions): Promise<KmsLike> =>
        options.kms ?? (await createKms(options.kmsOptions)),
      inject: [KMS_MODULE_OPTIONS],
    },
    {
      provide: KMS_NONCE_STORE,
      // One store per module, shared by every guard instance, so a nonce seen on one route
      // is a replay on all of them. Null when replay protection is off.
      useFactory: (options: KmsModuleOptions): NonceStore | null => {
        const configured = options.signature?.nonceStore;
        if (configured === false) return null;
        return configured ?? new MemoryNonceStore();
      },
      inject: [KMS_MODULE_OPTIONS],
    },
    { provide: APP_FILTER, useClass: ProblemDetailsFilter },
    KmsService,
    SignatureGuard,
    SignResponseInterceptor,
    KmsContextInterceptor,
  ],
  exports: [
    KMS_CLIENT,
    KMS_NONCE_STORE,
    KMS_MODULE_OPTIONS,
    KmsService,
    SignatureGuard,
    SignResponseInterceptor,
    KmsContextInterceptor,
  ],
})
export class KmsModule extends KmsConfigurableModule {}
