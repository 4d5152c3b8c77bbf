import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from "typeorm";

/**
 * A webhook the receiver accepted, with what its signature proved. It carries no patient data
 * (the event names the patient by its public id only), so nothing here is encrypted.
 */
@Entity("webhook_events")
export class WebhookEvent {
  /** Internal: it counts every clinic's events, so no answer shows it (`eventId` instead). */
  @PrimaryGeneratedColumn()
  id: number;

  /** The event's public id, a random UUID: the receipt and the events list name it. */
  @Column({ type: "varchar", length: 36, unique: true })
  eventId: string;

  @Column({ type: "varchar", length: 60 })
  event: string;

  @Column({ type: "varchar", length: 40 })
  tenantId: string;

  /** The patient's public id (its recordId). */
  @Column({ type: "varchar", length: 36 })
  patientId: string;

  /** The `keyid` of the verified signature: which sender's key vouched for the body. */
  @Column({ type: "varchar", length: 100 })
  signatureKeyId: string;

  @Column({ type: "varchar", length: 100 })
  signatureLabel: string;

  @CreateDateColumn()
  receivedAt: Date;
}
