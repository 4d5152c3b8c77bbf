export { bearer, CLINIC_TOKENS, TENANTS } from "./clinics.ts";
export {
  bannerOrigin,
  type DemoExit,
  type DemoProcess,
  exitWithin,
  STARTUP_MISTAKES,
  STOP_BOUND_MS,
  startDemo,
} from "./demo-process.ts";
