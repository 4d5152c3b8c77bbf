import { randomUUID } from "node:crypto";
import { CLINIC, PATIENT_ID } from "@kms/demo-shared";
import { Signed, VerifySignature, verifiedSignatureOf } from "@kms/nestjs";
import { Body, Controller, Get, HttpCode, Post, Req, UseGuards } from "@nestjs/common";
import { InjectRepository } from "@nestjs/typeorm";
import type { Repository } from "typeorm";
import { authenticatedClinic, DemoAuthGuard } from "./demo-auth.guard.ts";
import { invalidInput } from "./problems.ts";
import { WebhookEvent } from "./webhook-event.entity.ts";

interface PatientCreatedBody {
  readonly event?: unknown;
  readonly tenantId?: unknown;
  readonly patientId?: unknown;
}

/** A received event as answered: `id` is its eventId, the row's own id stays internal. */
export type WebhookEventView = { readonly id: string } & Omit<WebhookEvent, "id" | "eventId">;

/**
 * The receiving side of the webhook. `@VerifySignature` (the module's `SignatureGuard`, with the
 * module's `authorities`: this instance's host:ports) refuses unsigned, tampered, expired,
 * replayed, unknown-key or other-authority requests with 401 problem+json before this code
 * runs; `@Signed()` signs the answer, bound to the request it answers.
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
  ): Promise<{ received: string }> {
    if (body === null || typeof body !== "object" || body.event !== "patient.created") {
      throw invalidInput('event must be "patient.created"');
    }
    if (typeof body.tenantId !== "string" || !CLINIC.test(body.tenantId)) {
      throw invalidInput("tenantId: 1–40 characters of a-z, 0-9 and -");
    }
    // As PatientsController answers it: lower case.
    const { patientId } = body;
    if (
      typeof patientId !== "string" ||
      !PATIENT_ID.test(patientId) ||
      patientId !== patientId.toLowerCase()
    ) {
      throw invalidInput("patientId: a patient id (a lowercase UUID)");
    }
    // Set by the guard: which key vouched for this body.
    const signature = verifiedSignatureOf(req);
    if (signature === undefined) throw new Error("SignatureGuard did not run on this route");
    const saved = await this.#events.save(
      this.#events.create({
        eventId: randomUUID(),
        event: body.event,
        tenantId: body.tenantId,
        patientId,
        signatureKeyId: signature.keyId,
        signatureLabel: signature.label,
      }),
    );
    return { received: saved.eventId };
  }

  /**
   * What the receiver accepted for the caller's clinic (no patient data: ids only), oldest
   * first, each named by its `eventId`. Behind the clinic's token like the patients:
   * unauthenticated, it listed every clinic's name and patient ids to anyone.
   */
  @Get("events")
  @UseGuards(DemoAuthGuard)
  async events(@Req() req: object): Promise<WebhookEventView[]> {
    const events = await this.#events.find({
      where: { tenantId: authenticatedClinic(req) },
      order: { id: "ASC" },
    });
    return events.map(({ id: _, eventId, ...event }) => ({ id: eventId, ...event }));
  }
}
