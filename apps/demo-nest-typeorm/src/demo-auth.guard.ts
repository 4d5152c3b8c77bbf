import { type CanActivate, type ExecutionContext, Injectable } from "@nestjs/common";

const TOKEN = /^Bearer ([a-z0-9._-]{1,64})@([a-z0-9][a-z0-9-]{0,39})$/;

/**
 * A stand-in for real authentication: `Authorization: Bearer <user>@<clinic>` becomes
 * `req.user = { id, tenantId }`. KmsContextInterceptor prefers `req.user.tenantId` to the
 * `x-tenant-id` header and records the user as the principal of every KMS call. Replace it with
 * your Passport/JWT guard; anything that sets `req.user.tenantId` works the same way.
 */
@Injectable()
export class DemoAuthGuard implements CanActivate {
  canActivate(execution: ExecutionContext): boolean {
    if (execution.getType() !== "http") return true;
    const req = execution
      .switchToHttp()
      .getRequest<{ headers: Record<string, string | undefined>; user?: object }>();
    const match = TOKEN.exec(req.headers.authorization ?? "");
    if (match !== null) req.user = { id: match[1], tenantId: match[2] };
    return true;
  }
}
