import { PATIENT_ID } from "@kms/demo-shared";
import { EncryptionContext, KmsContextInterceptor } from "@kms/nestjs";
import {
  Body,
  Controller,
  Get,
  Inject,
  Param,
  Post,
  Query,
  UseGuards,
  UseInterceptors,
} from "@nestjs/common";
import { DemoAuthGuard } from "./demo-auth.guard.ts";
import type { Vitals } from "./patient.entity.ts";
import { type NewPatient, PatientsService, type PatientView, viewOf } from "./patients.service.ts";
import { invalidInput } from "./problems.ts";
import { type WebhookDelivery, WebhookSender } from "./webhook-sender.service.ts";

const SSN = /^\d{3}-\d{2}-\d{4}$/;

interface PatientBody {
  readonly ssn?: unknown;
  readonly name?: unknown;
  readonly note?: unknown;
  readonly vitals?: unknown;
}

function patientInput(body: PatientBody | undefined): NewPatient {
  if (body === undefined || body === null || typeof body !== "object") {
    throw invalidInput("body must be a JSON object");
  }
  const { ssn, name, note = null, vitals = null } = body;
  if (typeof ssn !== "string" || !SSN.test(ssn)) throw invalidInput("ssn: ddd-dd-dddd");
  if (typeof name !== "string" || name.trim().length === 0 || name.length > 200) {
    throw invalidInput("name: 1–200 characters");
  }
  if (note !== null && (typeof note !== "string" || note.length > 10_000)) {
    throw invalidInput("note: a string of at most 10,000 characters, or null");
  }
  if (vitals !== null && (typeof vitals !== "object" || Array.isArray(vitals))) {
    throw invalidInput("vitals: a JSON object, or null");
  }
  return { ssn, name, note: note as string | null, vitals: vitals as Vitals | null };
}

function tenantOf(context: Readonly<Record<string, string>> | undefined): string {
  // DemoAuthGuard answered 401 already when there is none; this keeps types honest.
  const tenant = context?.tenant;
  if (tenant === undefined) throw new Error("KmsContextInterceptor set no tenant on this route");
  return tenant;
}

/**
 * The clinic is the one whose bearer token the request sends (`DemoAuthGuard`: no valid token →
 * 401 problem+json); `KmsContextInterceptor` makes it the request's encryption context, and every
 * ORM read and write below runs inside it.
 */
@Controller("patients")
@UseGuards(DemoAuthGuard)
@UseInterceptors(KmsContextInterceptor)
export class PatientsController {
  readonly #patients: PatientsService;
  readonly #webhooks: WebhookSender;

  constructor(
    @Inject(PatientsService) patients: PatientsService,
    @Inject(WebhookSender) webhooks: WebhookSender,
  ) {
    this.#patients = patients;
    this.#webhooks = webhooks;
  }

  /** Creates a patient, then tells the webhook receiver (signed) and reports the delivery. */
  @Post()
  async create(
    @Body() body: PatientBody | undefined,
    @EncryptionContext() context: Readonly<Record<string, string>> | undefined,
  ): Promise<PatientView & { webhook: WebhookDelivery }> {
    const tenantId = tenantOf(context);
    const patient = await this.#patients.create(tenantId, patientInput(body));
    const webhook = await this.#webhooks.send({
      event: "patient.created",
      tenantId,
      patientId: patient.recordId,
    });
    return { ...viewOf(patient), webhook };
  }

  @Get()
  async list(
    @Query("ssn") ssn: unknown,
    @Query("name") name: unknown,
    @EncryptionContext() context: Readonly<Record<string, string>> | undefined,
  ): Promise<PatientView[]> {
    if (ssn !== undefined && (typeof ssn !== "string" || !SSN.test(ssn))) {
      throw invalidInput("ssn: ddd-dd-dddd");
    }
    if (name !== undefined && (typeof name !== "string" || name.length > 200)) {
      throw invalidInput("name: at most 200 characters");
    }
    const filter = {
      ...(ssn === undefined ? {} : { ssn: ssn as string }),
      ...(name === undefined ? {} : { name: name as string }),
    };
    const patients = await this.#patients.find(tenantOf(context), filter);
    return patients.map(viewOf);
  }

  /** By the patient's public id: a malformed one never reaches the database (400). */
  @Get(":id")
  async get(@Param("id") id: string): Promise<PatientView> {
    if (!PATIENT_ID.test(id)) {
      throw invalidInput("id: a patient id (a UUID, as POST /patients returns it)");
    }
    return viewOf(await this.#patients.byId(id.toLowerCase()));
  }
}
