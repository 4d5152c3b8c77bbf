/** Injection token of the {@link DemoConfig}. */
export const DEMO_CONFIG = "DEMO_CONFIG";
