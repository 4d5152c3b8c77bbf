import "reflect-metadata";
import {
  ChildEntity,
  Column,
  DeleteDateColumn,
  Entity,
  ManyToOne,
  OneToMany,
  PrimaryGeneratedColumn,
  type Relation,
  TableInheritance,
} from "typeorm";
import { EncryptedColumn } from "../src/index.ts";

@Entity("kms_users")
export class User {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ deterministic: true, unique: true, context: { fromRow: ["tenantId"] } })
  email: string;

  @EncryptedColumn({
    nullable: true,
    blindIndex: { column: "phoneIndex", normalize: ["trim"], bytes: 16 },
    context: { fromRow: ["tenantId"] },
  })
  phone: string | null;

  phoneIndex?: string | null;

  @EncryptedColumn({ type: "json", nullable: true, context: { fromRow: ["tenantId"] } })
  profile: { likes: string[]; age: number } | null;

  @EncryptedColumn({ storage: "bytes", nullable: true })
  avatar: Uint8Array | null;

  @OneToMany(
    () => Post,
    (post) => post.author,
  )
  posts: Relation<Post[]>;
}

@Entity("kms_posts")
export class Post {
  @PrimaryGeneratedColumn()
  id: number;

  @EncryptedColumn({ context: { fromScope: ["tenant"] } })
  body: string;

  @ManyToOne(
    () => User,
    (user) => user.posts,
    { eager: true },
  )
  author: Relation<User>;
}

/** Started life with plaintext columns; the migration job encrypts them in place. */
@Entity("kms_notes")
export class Note {
  @PrimaryGeneratedColumn()
  id: number;

  @EncryptedColumn()
  title: string;

  @EncryptedColumn({ deterministic: true, nullable: true })
  code: string | null;
}

/**
 * Every encrypted column nullable, so that a row can hold nothing bound to its tenant; a unique
 * deterministic column for upserts; a plain counter for increment(); soft deletes.
 */
@Entity("kms_cards")
export class Card {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({
    deterministic: true,
    unique: true,
    nullable: true,
    context: { fromRow: ["tenantId"] },
  })
  holder: string | null;

  @EncryptedColumn({
    nullable: true,
    blindIndex: { column: "panIndex" },
    context: { fromRow: ["tenantId"] },
  })
  pan: string | null;

  panIndex?: string | null;

  @Column({ type: "int", default: 0 })
  uses: number;

  @DeleteDateColumn({ nullable: true })
  deletedAt: Date | null;
}

/** Single-table inheritance: accounts of every kind share one table, told apart by `kind`. */
@Entity("kms_accounts")
@TableInheritance({ column: { type: String, length: 32, name: "kind" } })
export class Account {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  holder: string | null;
}

@ChildEntity("savings")
export class SavingsAccount extends Account {
  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  iban: string | null;
}

/** Nested inside Address: an encrypted column two embeddeds deep. */
export class Geo {
  @EncryptedColumn({ type: "json", nullable: true, context: { fromRow: ["tenantId"] } })
  point: { lat: number; lng: number } | null;

  @Column({ type: "int", nullable: true })
  floor: number | null;
}

/** Embedded twice in Person: its encrypted columns are bound to each embedding's column. */
export class Address {
  @EncryptedColumn({ deterministic: true, nullable: true, context: { fromRow: ["tenantId"] } })
  street: string | null;

  @EncryptedColumn({
    nullable: true,
    blindIndex: { column: "zipIndex", normalize: ["trim"] },
    context: { fromRow: ["tenantId"] },
  })
  zip: string | null;

  zipIndex?: string | null;

  @Column({ type: String, length: 64, nullable: true })
  city: string | null;

  @Column(() => Geo)
  geo: Geo;
}

/** Encrypted columns in embedded classes: `homeStreet`, `officeStreet`, `homeGeoPoint`, … */
@Entity("kms_people")
export class Person {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  /** For upserts: PostgreSQL leaves a generated id out of the INSERT. */
  @Column({ type: String, length: 64, unique: true })
  handle: string;

  @Column(() => Address)
  home: Address;

  @Column(() => Address, { prefix: "office" })
  work: Address;

  @Column({ type: "int", default: 0 })
  visits: number;

  @OneToMany(
    () => Visit,
    (visit) => visit.person,
  )
  visitList: Relation<Visit[]>;
}

/** A row whose save cascades to a (partially loaded) Person. */
@Entity("kms_visits")
export class Visit {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "int", default: 0 })
  minutes: number;

  @ManyToOne(
    () => Person,
    (person) => person.visitList,
    { cascade: true },
  )
  person: Relation<Person>;
}
