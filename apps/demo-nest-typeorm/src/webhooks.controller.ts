import { Signed, VerifySignature, verifiedSignatureOf } from "@kms/nestjs";
import { Body, Controller, Get, HttpCode, Post, Req, UseGuards } from "@nestjs/common";
import { InjectRepository } from "@nestjs/typeorm";
import type { Repository } from "typeorm";
import { authenticatedClinic, DemoAuthGuard } from "./demo-auth.guard.ts";
import { invalidInput } from "./problems.ts";
import { WebhookEvent } from "./webhook-event.entity.ts";

const TENANT = /^[a-z0-9][a-z0-9-]{0,39}$/;

interface PatientCreatedBody {
  readonly event?: unknown;
  readonly tenantId?: unknown;
  readonly patientId?: unknown;
}

/**
 * The receiving side of the webhook. `@VerifySignature` (the module's `SignatureGuard`) refuses
 * unsigned, tampered, expired, replayed or unknown-key requests with 401 problem+json before
 * this code runs; `@Signed()` signs the answer, bound to the request it answers.
 */
@Controller("webhooks")
export class WebhooksController {
  readonly #events: Repository<WebhookEvent>;

  constructor(@InjectRepository(WebhookEvent) events: Repository<WebhookEvent>) {
    this.#events = events;
  }

  @Post("patient-created")
  @HttpCode(200)
  @VerifySignature({
    requiredComponents: ["@method", "@target-uri", "content-digest", "content-type"],
    contentDigest: "required",
    requireExpires: true,
    algorithms: ["hmac-sha256"],
  })
  @Signed()
  async patientCreated(
    @Body() body: PatientCreatedBody,
    @Req() req: object,
  ): Promise<{ received: number }> {
    if (body === null || typeof body !== "object" || body.event !== "patient.created") {
      throw invalidInput('event must be "patient.created"');
    }
    if (typeof body.tenantId !== "string" || !TENANT.test(body.tenantId)) {
      throw invalidInput("tenantId: 1–40 characters of a-z, 0-9 and -");
    }
    if (!Number.isSafeInteger(body.patientId) || (body.patientId as number) < 1) {
      throw invalidInput("patientId must be a positive integer");
    }
    // Set by the guard: which key vouched for this body.
    const signature = verifiedSignatureOf(req);
    if (signature === undefined) throw new Error("SignatureGuard did not run on this route");
    const saved = await this.#events.save(
      this.#events.create({
        event: body.event,
        tenantId: body.tenantId,
        patientId: body.patientId as number,
        signatureKeyId: signature.keyId,
        signatureLabel: signature.label,
      }),
    );
    return { received: saved.id };
  }

  /**
   * What the receiver accepted for the caller's clinic (no patient data: ids only). Behind the
   * clinic's token like the patients: unauthenticated, it listed every clinic's name and
   * patient ids to anyone.
   */
  @Get("events")
  @UseGuards(DemoAuthGuard)
  events(@Req() req: object): Promise<WebhookEvent[]> {
    return this.#events.find({
      where: { tenantId: authenticatedClinic(req) },
      order: { id: "ASC" },
    });
  }
}
