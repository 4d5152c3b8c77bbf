CREATE TABLE "User" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "email" TEXT NOT NULL,
  "name" TEXT,
  "phone" TEXT,
  "phoneIndex" TEXT,
  "profile" TEXT,
  "score" TEXT,
  "avatar" BYTEA,
  "plain" TEXT
);
CREATE UNIQUE INDEX "User_tenantId_email_key" ON "User"("tenantId", "email");
CREATE TABLE "Post" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "title" TEXT NOT NULL,
  "body" TEXT NOT NULL,
  "publishedAt" TEXT,
  "authorId" INTEGER NOT NULL REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "Comment" (
  "id" SERIAL PRIMARY KEY,
  "text" TEXT NOT NULL,
  "postId" INTEGER NOT NULL REFERENCES "Post" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "Chart" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "recordId" TEXT NOT NULL,
  "ssn" TEXT NOT NULL,
  "name" TEXT,
  "note" TEXT,
  "vitals" TEXT,
  "ownerId" INTEGER REFERENCES "User" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "Chart_recordId_key" ON "Chart"("recordId");
CREATE UNIQUE INDEX "Chart_tenantId_ssn_key" ON "Chart"("tenantId", "ssn");
CREATE TABLE "Draft" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT,
  "threadId" TEXT,
  "body" TEXT,
  "reply" TEXT,
  "authorId" INTEGER REFERENCES "User" ("id") ON DELETE SET NULL ON UPDATE CASCADE,
  "parentId" INTEGER REFERENCES "Draft" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE TYPE "InvoiceStatus" AS ENUM ('OPEN', 'PAID');
CREATE TABLE "Tenant" (
  "id" TEXT PRIMARY KEY,
  "name" TEXT NOT NULL
);
CREATE TABLE "Invoice" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL REFERENCES "Tenant" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
  "memo" TEXT,
  "in" TEXT,
  "equals" TEXT,
  "status" "InvoiceStatus" NOT NULL DEFAULT 'OPEN'
);
CREATE UNIQUE INDEX "Invoice_tenantId_in_key" ON "Invoice"("tenantId", "in");
CREATE UNIQUE INDEX "Invoice_in_equals_key" ON "Invoice"("in", "equals");
CREATE UNIQUE INDEX "Invoice_tenantId_id_key" ON "Invoice"("tenantId", "id");
CREATE TABLE "InvoiceLine" (
  "tenantId" TEXT NOT NULL,
  "number" INTEGER NOT NULL,
  "invoiceId" INTEGER NOT NULL,
  "text" TEXT,
  PRIMARY KEY ("tenantId", "number"),
  FOREIGN KEY ("tenantId", "invoiceId") REFERENCES "Invoice" ("tenantId", "id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "_InvoiceWatchers" (
  "A" INTEGER NOT NULL REFERENCES "Invoice" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
  "B" TEXT NOT NULL REFERENCES "Tenant" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
  PRIMARY KEY ("A", "B")
);
CREATE INDEX "_InvoiceWatchers_B_index" ON "_InvoiceWatchers"("B");
CREATE TABLE "Patient" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "ssn" TEXT NOT NULL,
  "email" TEXT NOT NULL,
  "emailIdx" TEXT,
  "chart" TEXT
);
CREATE UNIQUE INDEX "Patient_tenantId_ssn_key" ON "Patient"("tenantId", "ssn");
CREATE TABLE "Ledger" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "active" TEXT,
  "verified" TEXT,
  "balance" TEXT
);
CREATE TABLE "Payment" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "amount" TEXT,
  "amountIndex" TEXT,
  "paidAt" TEXT,
  "paidAtIndex" TEXT,
  "ref" TEXT,
  "refIndex" TEXT
);
CREATE TABLE "Memo" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "body" TEXT,
  "deletedAt" TIMESTAMP(3)
);
CREATE TABLE "Label" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "code" TEXT NOT NULL,
  "phone" TEXT,
  "phoneIdx" TEXT,
  "ownerId" INTEGER REFERENCES "User" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE TABLE "Reading" (
  "id" SERIAL PRIMARY KEY,
  "rank" INTEGER NOT NULL,
  "serial" BIGINT NOT NULL,
  "weight" DOUBLE PRECISION NOT NULL,
  "status" "InvoiceStatus" NOT NULL,
  "value" TEXT,
  "amount" DECIMAL(65,30),
  "takenAt" TIMESTAMP(3),
  "flagged" BOOLEAN
);
CREATE TABLE "Preference" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "secret" TEXT,
  "hint" TEXT,
  "hintIdx" TEXT,
  "data" JSONB,
  "userId" INTEGER NOT NULL UNIQUE REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE TABLE "Parcel" (
  "id" SERIAL PRIMARY KEY,
  "tenantId" TEXT NOT NULL,
  "code" TEXT NOT NULL,
  "body" TEXT,
  "label" TEXT,
  "where" TEXT,
  "data" TEXT,
  "create" TEXT,
  "update" TEXT,
  "skipDuplicates" BOOLEAN,
  "ownerId" INTEGER NOT NULL REFERENCES "User" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
  UNIQUE ("tenantId", "code")
);
CREATE TABLE "Audit" (
  "id" SERIAL PRIMARY KEY,
  "message" TEXT NOT NULL
);
CREATE TABLE "KmsDataKey" (
  "id" TEXT PRIMARY KEY,
  "kmsKeyId" TEXT NOT NULL,
  "wrappedKey" BYTEA NOT NULL,
  "encryptionContext" TEXT NOT NULL,
  "purpose" TEXT NOT NULL,
  "createdAt" BIGINT NOT NULL
);
