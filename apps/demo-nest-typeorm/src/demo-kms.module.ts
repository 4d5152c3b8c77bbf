import { type DynamicModule, Global, Inject, Module, type OnModuleDestroy } from "@nestjs/common";
import type { DemoKms } from "./kms.ts";
import { DEMO_KMS } from "./tokens.ts";

/**
 * Provides the demo's KMS as {@link DEMO_KMS} and closes it with the app: its `crypto` half goes to
 * KmsModule (field encryption, webhook signatures), its `keys` half to whatever provisions or
 * shreds keys. `KmsService.core` would not do for that: it throws unless the KMS is in-process.
 */
@Global()
@Module({})
export class DemoKmsModule implements OnModuleDestroy {
  readonly #kms: DemoKms;

  constructor(@Inject(DEMO_KMS) kms: DemoKms) {
    this.#kms = kms;
  }

  static forRoot(kms: DemoKms): DynamicModule {
    return {
      module: DemoKmsModule,
      providers: [{ provide: DEMO_KMS, useValue: kms }],
      exports: [DEMO_KMS],
    };
  }

  onModuleDestroy(): Promise<void> {
    return this.#kms.close();
  }
}
