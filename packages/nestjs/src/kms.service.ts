import {
  type CallOptions,
  type EncryptionContext,
  Kms,
  type KmsLike,
  UnsupportedOperationError,
} from "@kms/core";
import { Inject, Injectable, type OnModuleDestroy } from "@nestjs/common";
import { KMS_CLIENT } from "./kms.constants.ts";
import { KMS_MODULE_OPTIONS } from "./kms.module-definition.ts";
import { currentKmsContext, type RequestKmsContext } from "./kms-context.ts";
import type { KmsModuleOptions } from "./kms-module.options.ts";

/** The module's KMS and the current request's KMS context. */
@Injectable()
export class KmsService implements OnModuleDestroy {
  /** The configured KMS: the in-process `Kms` or any `KmsLike`. */
  readonly kms: KmsLike;
  readonly #close: boolean;

  constructor(
    @Inject(KMS_CLIENT) kms: KmsLike,
    @Inject(KMS_MODULE_OPTIONS) options: KmsModuleOptions,
  ) {
    this.kms = kms;
    this.#close = options.closeOnDestroy ?? options.kms === undefined;
  }

  /**
   * The in-process `Kms`, for administrative operations (createKey, rotation…) that `KmsLike`
   * leaves out.
   * @throws UnsupportedOperationException when the module was given another `KmsLike`.
   */
  get core(): Kms {
    if (!(this.kms instanceof Kms)) {
      throw new UnsupportedOperationError(
        '"kms" is not the in-process Kms; administrative operations need @kms/core\'s Kms',
      );
    }
    return this.kms;
  }

  /** The context `KmsContextInterceptor` set for the current request, if any. */
  context(): RequestKmsContext | undefined {
    return currentKmsContext();
  }

  /** The current request's encryption context, if any. */
  encryptionContext(): EncryptionContext | undefined {
    return currentKmsContext()?.encryptionContext;
  }

  /** Call options carrying the current request's principal and request id, for audit. */
  callOptions(): CallOptions {
    const context = currentKmsContext();
    if (context === undefined) return {};
    return {
      ...(context.principal !== undefined ? { principal: context.principal } : {}),
      requestId: context.requestId,
    };
  }

  async onModuleDestroy(): Promise<void> {
    const closable = this.kms as KmsLike & { close?: () => Promise<void> | void };
    if (this.#close && typeof closable.close === "function") await closable.close();
  }
}
