import { describe, expect, test } from "vitest";
import { ResultFieldRegistry } from "./result-fields.ts";

/** A client as Prisma 7 shapes it: its extension list resolves the fields applied so far. */
const clientWith = (before: Record<string, Record<string, { needs: string[] }>>) => ({
  _extensions: { getAllComputedFields: (model: string) => before[model] },
});
const needsOf = (registry: ResultFieldRegistry, model: string) => {
  const fields = registry.of(model)?.needs;
  return (
    fields && Object.fromEntries([...fields].map(([name, needs]) => [name, [...needs].sort()]))
  );
};

describe("the result fields a query may compute", () => {
  test("those applied before, and after through $extends, for the model and $allModels", () => {
    const registry = new ResultFieldRegistry(
      clientWith({ User: { label: { needs: ["tenantId"] } } }),
    );
    expect(needsOf(registry, "User")).toEqual({ label: ["tenantId"] });
    expect(needsOf(registry, "Post")).toEqual({});
    registry.add({
      result: {
        user: { greeting: { needs: { name: true, email: false }, compute: () => "" } },
        $allModels: { tag: { needs: { id: true }, compute: () => "" } },
      },
    });
    expect(needsOf(registry, "User")).toEqual({
      label: ["tenantId"],
      greeting: ["name"],
      tag: ["id"],
    });
    expect(needsOf(registry, "Post")).toEqual({ tag: ["id"] });
    // A function extension, or one without a result component, adds nothing of its own.
    registry.add(() => undefined);
    registry.add({ query: {} });
    expect(Object.keys(needsOf(registry, "Post") ?? {})).toEqual(["tag"]);
  });

  test("a need naming another field stands for its needs too; one name on two clients, for both", () => {
    const registry = new ResultFieldRegistry(clientWith({}));
    registry.add({ result: { user: { full: { needs: { label: true, name: true } } } } });
    registry.add({ result: { user: { label: { needs: { tenantId: true } } } } });
    // Another client made from the same one names a field `label` too, needing something else.
    registry.add({ result: { user: { label: { needs: { recordId: true } } } } });
    expect(needsOf(registry, "User")).toEqual({
      full: ["label", "name", "recordId", "tenantId"],
      label: ["recordId", "tenantId"],
    });
    // A cycle ends.
    registry.add({ result: { user: { a: { needs: { b: true } }, b: { needs: { a: true } } } } });
    expect(needsOf(registry, "User")?.a).toEqual(["a", "b"]);
  });

  test("certain: the fields every client that has them defines alike, needing columns only", () => {
    const registry = new ResultFieldRegistry(
      clientWith({ User: { label: { needs: ["tenantId"] }, mail: { needs: ["email"] } } }),
    );
    const certain = () =>
      Object.fromEntries(
        [...(registry.of("User")?.certain ?? [])].map(([name, needs]) => [name, [...needs]]),
      );
    expect(certain()).toEqual({ label: ["tenantId"], mail: ["email"] });
    // The same definition again (one extension applied to two clients): still certain.
    registry.add({ result: { user: { label: { needs: { tenantId: true, name: false } } } } });
    // Another client names a field `mail` too, needing something else: either may be the one.
    registry.add({ result: { $allModels: { mail: { needs: { id: true } } } } });
    // A field needing a field: Prisma resolves it through the one the client has.
    registry.add({ result: { user: { full: { needs: { label: true, name: true } } } } });
    expect(certain()).toEqual({ label: ["tenantId"] });
    expect(needsOf(registry, "User")).toEqual({
      label: ["tenantId"],
      mail: ["email", "id"],
      full: ["label", "name", "tenantId"],
    });
  });

  test("unknown where the client keeps no extension list Prisma 7's way", () => {
    expect(new ResultFieldRegistry({}).of("User")).toBeUndefined();
    const odd = { _extensions: { getAllComputedFields: () => ({ label: { needs: "tenantId" } }) } };
    expect(new ResultFieldRegistry(odd).of("User")).toBeUndefined();
    // An empty list (a client without extensions) answers undefined for every model: none.
    expect(new ResultFieldRegistry(clientWith({})).of("User")?.needs).toEqual(new Map());
  });
});
