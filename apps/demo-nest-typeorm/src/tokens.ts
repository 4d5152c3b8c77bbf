/** Injection token of the {@link DemoConfig}. */
export const DEMO_CONFIG = "DEMO_CONFIG";
/** Injection token of the {@link DemoKms} (in-process or a KMS server). */
export const DEMO_KMS = "DEMO_KMS";
