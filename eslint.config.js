// Lint rules for the library, the CLI package and the tests (eslint 9 flat config with
// typescript-eslint, without type information, so `npm run lint` stays fast). Formatting
// is prettier's (`.prettierrc.json`); no rule here formats.
// The size rules carry the house rule (a source file about 400 lines at most, a function
// or closure about 80) for src/ and cli/src/; they warn while the large modules are split.
import js from "@eslint/js"
import { defineConfig } from "eslint/config"
import tseslint from "typescript-eslint"

// The globals Node provides that the plain .mjs/.js files here use (the .ts files are typechecked instead).
const nodeGlobals = Object.fromEntries(
  [
    "AbortController",
    "Buffer",
    "URL",
    "clearInterval",
    "clearTimeout",
    "console",
    "fetch",
    "performance",
    "process",
    "queueMicrotask",
    "setImmediate",
    "setInterval",
    "setTimeout",
    "structuredClone"
  ].map((name) => [name, "readonly"])
)

export default defineConfig(
  {
    // bench/ is a package of its own (its own dependencies); luaSources.ts is generated.
    ignores: [
      "**/dist/**",
      "**/node_modules/**",
      "bench/**",
      "coverage/**",
      ".test-redis/**",
      ".scratch/**",
      "src/internal/luaSources.ts"
    ]
  },
  {
    files: ["**/*.ts", "**/*.mjs", "**/*.js"],
    extends: [js.configs.recommended, tseslint.configs.recommended],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: nodeGlobals },
    rules: {
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_", ignoreRestSiblings: true }
      ],
      "@typescript-eslint/consistent-type-imports": [
        "error",
        { prefer: "type-imports", fixStyle: "inline-type-imports", disallowTypeAnnotations: false }
      ],
      // `catch {}` is how a best-effort cleanup says "nothing to do".
      "no-empty": ["error", { allowEmptyCatch: true }],
      // The code strips and rejects control characters on purpose (records, notes, terminal output).
      "no-control-regex": "off",
      // Effect's idioms: `Data.TaggedEnum<{ Case: {} }>` and `any` in a generic constraint.
      "@typescript-eslint/no-empty-object-type": "off",
      "@typescript-eslint/no-explicit-any": "off"
    }
  },
  {
    // Tests build bad input on purpose (arrays with holes among it).
    files: ["test/**/*.ts"],
    rules: { "no-sparse-arrays": "off" }
  },
  {
    // The house's size rules: no source file over ~400 lines, no function over ~80.
    files: ["src/**/*.ts", "cli/src/**/*.ts"],
    ignores: ["src/internal/luaSources.ts"],
    rules: {
      "max-lines": ["error", { max: 400, skipBlankLines: true, skipComments: true }],
      "max-lines-per-function": ["error", { max: 80, skipBlankLines: true, skipComments: true, IIFEs: true }]
    }
  }
)
