// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// @title Test only: a plain OpenZeppelin ERC-721 with an unguarded mint loop.
/// @notice The reference that mint gas is measured against, in the same run.
contract BaselineERC721 is ERC721 {
    constructor() ERC721("Baseline", "BASE") {}

    function mintLoop(address[] calldata to, uint256[] calldata tokenIds) external {
        for (uint256 i; i < to.length; ++i) {
            _mint(to[i], tokenIds[i]);
        }
    }

    function safeMintLoop(address[] calldata to, uint256[] calldata tokenIds) external {
        for (uint256 i; i < to.length; ++i) {
            _safeMint(to[i], tokenIds[i]);
        }
    }
}
