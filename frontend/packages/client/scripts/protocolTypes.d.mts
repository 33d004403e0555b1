export declare const SCHEMA: string;
export declare const OUTPUT: string;
/** The TypeScript text of `src/client/generated/protocol.ts` for an AsyncAPI document. */
export declare function generate(text?: string): Promise<string>;
